"""The token store: Sanctum's table plus tokensync's epochs, all changes via the outbox.

``TokenStore`` is the facade the CLI, the API and the Python API use. Its parts live in
modules of one concept each: single tokens (``producer.token_rows``), mass revocations
(``producer.epochs``), regions (``producer.regions``), outbox positions
(``producer.positions``), on the shared core (``producer.store_core``); the tables are in
``producer.models``, time helpers in ``producer.clock``, dialect branches in
``producer.dialects``, what the store returns in ``producer.records``.
"""

from __future__ import annotations

from producer.epochs import Epochs
from producer.positions import Positions
from producer.regions import Regions
from producer.schema import create_engine, migrate
from producer.token_rows import TokenRows
from shared.settings import Settings

__all__ = ["TokenStore"]


class TokenStore(TokenRows, Epochs, Regions, Positions):
    """Issues, lists and revokes tokens in the authoritative database."""

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate_schema: bool = True) -> TokenStore:
        """A store on ``settings.database_url``, its schema migrated to the newest revision."""
        engine = create_engine(settings.database_url, settings.store_timezone)
        if migrate_schema:
            migrate(engine)
        return cls(
            engine,
            token_prefix=settings.token_prefix,
            expiration_minutes=settings.token_expiration_minutes,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
