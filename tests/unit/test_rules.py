"""The one rule set without a server: freshness, expiry, epochs, abilities."""

from __future__ import annotations

from shared.outcomes import Outcome, Principal
from shared.rules import (
    Freshness,
    TokenRecord,
    answerable_window,
    epoch_scopes,
    judge,
    region_unavailable_reason,
)

NOW = 1_700_000_000_000
USER = "App\\Models\\User"


def test_the_answerable_window_is_the_unavailable_rule_as_an_interval() -> None:
    freshness = Freshness(staleness_budget_s=2.0, clock_skew_allowance_s=0.5)
    heartbeat = 1_000_000
    window = answerable_window(True, heartbeat, freshness)
    assert window is not None
    for now in range(heartbeat - 1_000, heartbeat + 3_500, 7):
        inside = window[0] <= now <= window[1]
        assert inside == (region_unavailable_reason(True, heartbeat, now, freshness) is None)
    assert answerable_window(False, heartbeat, freshness) is None
    assert answerable_window(True, -1, freshness) is None


def test_a_heartbeat_ahead_beyond_the_skew_is_clock_ahead_and_an_old_one_stale() -> None:
    freshness = Freshness(staleness_budget_s=5.0, clock_skew_allowance_s=1.0)
    assert "clock_ahead" == region_unavailable_reason(True, NOW + 1_001, NOW, freshness)
    assert region_unavailable_reason(True, NOW + 1_000, NOW, freshness) is None
    assert "stale" == region_unavailable_reason(True, NOW - 6_001, NOW, freshness)
    assert "not_ready" == region_unavailable_reason(False, NOW, NOW, freshness)
    assert "no_heartbeat" == region_unavailable_reason(True, -1, NOW, freshness)


def _record(abilities: tuple[str, ...] = ("read",), **times: int | None) -> TokenRecord:
    principal = Principal(USER, "1", 1, "n", abilities, times.get("expires"))
    return TokenRecord(
        principal, times.get("created", NOW - 1_000), times.get("issued", NOW - 1_000)
    )


def test_judge_applies_expiry_epochs_and_abilities_in_sanctums_order() -> None:
    def answer(record: TokenRecord | None, epoch: int = 0, **kw: object) -> tuple[str, str]:
        result = judge(record, epoch, NOW, source="test", **kw)  # type: ignore[arg-type]
        return result.outcome.value, result.reason

    assert ("valid", "") == answer(_record())
    assert ("invalid", "unknown") == answer(None)
    assert ("invalid", "expired") == answer(_record(expires=NOW))
    assert ("invalid", "expired") == answer(
        _record(created=NOW - 61 * 60_000), expiration_minutes=60
    )
    assert ("invalid", "revoked") == answer(_record(), NOW - 999)
    assert ("valid", "") == answer(_record(), NOW - 1_000)  # issued at the epoch: kept
    assert ("invalid", "revoked") == answer(_record(issued=None), 1)
    assert ("forbidden", "ability") == answer(_record(), required=("write",))
    assert ("valid", "") == answer(_record(), required=("write", "read"), mode="any")
    assert ("valid", "") == answer(_record(("*",)), required=("anything",))
    assert (
        Outcome.FORBIDDEN
        == judge(_record(("Read",)), 0, NOW, required=("read",), source="t").outcome
    )


def test_the_epoch_scopes_of_a_token_are_global_its_principal_and_each_ability() -> None:
    assert ("global", f"principal:{USER}:7", "ability:a", "ability:*") == epoch_scopes(
        USER, 7, ("a", "*")
    )
