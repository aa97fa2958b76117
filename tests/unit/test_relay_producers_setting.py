"""``TOKENSYNC_RELAY_PRODUCERS``: how many processes produce a large relay batch."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import Settings


def test_relay_producers_default_to_one_and_round_trip_through_the_environment() -> None:
    assert Settings.from_env({}).relay_producers == 1
    settings = Settings.from_env({"TOKENSYNC_RELAY_PRODUCERS": "3"})
    assert settings.relay_producers == 3
    env = {k: v for k, v in settings.to_env().items() if v}
    assert Settings.from_env(env).relay_producers == 3


@pytest.mark.parametrize("raw", ["0", "17", "two"])
def test_relay_producers_out_of_range_or_not_a_number_are_refused_in_one_line(raw: str) -> None:
    with pytest.raises(ConfigError, match="RELAY_PRODUCERS"):
        Settings.from_env({"TOKENSYNC_RELAY_PRODUCERS": raw})
