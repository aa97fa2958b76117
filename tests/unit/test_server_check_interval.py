"""The out-of-band replication-id check's interval: parsed once, strictly, and kept under
the staleness budget; the INFO text read as Redis writes it."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.policy import Policy
from shared.script_link import REFUSED, replication_id
from shared.settings import Settings

INFO = (
    b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
    b"master_replid:8f2c0c1d0e3b4a5968778695a4b3c2d1e0f1a2b3\r\n"
    b"master_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:42\r\n"
)


def test_the_interval_defaults_to_50_ms_and_round_trips_through_the_environment() -> None:
    assert 0.05 == Settings.from_env({}).server_check_interval_s
    settings = Settings.from_env({"TOKENSYNC_SERVER_CHECK_INTERVAL": "0"})
    assert 0.0 == settings.server_check_interval_s
    assert 0.0 == Policy.from_settings(settings).server_check_interval_s
    assert settings == Settings.from_env(settings.to_env())


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "5", "9"])
def test_an_interval_below_zero_not_finite_or_not_under_the_budget_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="SERVER_CHECK_INTERVAL"):
        Settings.from_env({"TOKENSYNC_SERVER_CHECK_INTERVAL": raw})


@pytest.mark.parametrize("interval", [-0.1, float("nan"), 5.0, 6.0])
def test_a_policy_refuses_an_interval_that_is_not_under_its_budget(interval: float) -> None:
    with pytest.raises(ConfigError, match="server check interval"):
        Policy(staleness_budget_s=5.0, server_check_interval_s=interval)


def test_the_replication_id_is_read_from_info_and_its_absence_fails_closed() -> None:
    assert b"8f2c0c1d0e3b4a5968778695a4b3c2d1e0f1a2b3" == replication_id(INFO)
    assert b"8f2c0c1d0e3b4a5968778695a4b3c2d1e0f1a2b3" == replication_id(INFO.decode())
    assert REFUSED == replication_id(b"# Replication\r\nrole:master\r\n")
