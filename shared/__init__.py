"""The contract every tokensync part depends on: settings, errors, keys, logging, validation.

Services install this package alone; it imports no Kafka, faust or SQLAlchemy.
"""

from __future__ import annotations

from shared.errors import TokenSyncError
from shared.keys import RedisKeys, Topics, consumer_group
from shared.settings import Region, Settings

__all__ = ["RedisKeys", "Region", "Settings", "TokenSyncError", "Topics", "consumer_group"]
