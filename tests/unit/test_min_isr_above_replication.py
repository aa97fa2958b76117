"""A min.insync.replicas above the replication factor makes a topic refuse every acks=all
write (the relay would retry forever and no revocation would leave the store): settings
that ask for it are refused in one line before anything starts."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import Settings


def test_a_min_isr_above_the_configured_replication_factor_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(
            {
                "TOKENSYNC_KAFKA_REPLICATION_FACTOR": "2",
                "TOKENSYNC_KAFKA_MIN_INSYNC_REPLICAS": "3",
            }
        )
    message = str(error.value)
    assert "TOKENSYNC_KAFKA_MIN_INSYNC_REPLICAS" in message
    assert "TOKENSYNC_KAFKA_REPLICATION_FACTOR" in message
    assert "\n" not in message


def test_a_min_isr_equal_to_the_replication_factor_is_accepted() -> None:
    settings = Settings.from_env(
        {"TOKENSYNC_KAFKA_REPLICATION_FACTOR": "3", "TOKENSYNC_KAFKA_MIN_INSYNC_REPLICAS": "3"}
    )
    assert (3, 3) == (settings.kafka_replication_factor, settings.kafka_min_insync_replicas)
