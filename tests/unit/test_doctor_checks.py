"""``tokensync doctor``'s judgement of region clocks and of the key ids workers recorded."""

from __future__ import annotations

import json

from producer.doctor import Outcome, clock_check, signers_check
from shared.events import Keyring

NOW = 1_800_000_000_000


def entry(kids: list[str], at: int = NOW) -> str:
    return json.dumps({"kids": kids, "t": at})


def test_a_region_clock_beyond_the_allowance_fails_and_within_it_passes() -> None:
    assert Outcome.PASS == clock_check("region eu", 3.0, 1.0).outcome
    assert Outcome.WARN == clock_check("region eu", 600.0, 1.0).outcome
    ahead = clock_check("region eu", 1500.0, 1.0)
    assert Outcome.FAIL == ahead.outcome
    assert "1500 ms ahead of" in ahead.detail and "NTP" in ahead.fix
    assert Outcome.FAIL == clock_check("region eu", -1500.0, 1.0).outcome
    assert "behind" in clock_check("region eu", -1500.0, 1.0).detail


def test_a_worker_lacking_one_of_the_relays_key_ids_fails_naming_it() -> None:
    entries = {"a": entry(["k1", "k2"]), "b": entry(["k1"])}
    check = signers_check("region eu", ["k1", "k2"], entries, NOW)
    assert Outcome.FAIL == check.outcome
    assert "b lacks k2" in check.detail and "a lacks" not in check.detail


def test_workers_with_every_relay_key_pass_even_with_extra_ones() -> None:
    entries = {"a": entry(["k0", "k1", "k2"])}
    assert Outcome.PASS == signers_check("region eu", ["k1", "k2"], entries, NOW).outcome


def test_stale_or_unreadable_worker_entries_are_ignored_and_none_left_fails() -> None:
    entries = {"dead": entry(["k1"], at=NOW - 60_000), "junk": "{not json"}
    check = signers_check("region eu", ["k1", "k2"], entries, NOW)
    assert Outcome.FAIL == check.outcome
    assert "no worker recorded" in check.detail
    entries["live"] = entry(["k1", "k2"])
    assert Outcome.PASS == signers_check("region eu", ["k1", "k2"], entries, NOW).outcome


def test_a_keyring_lists_its_ids_and_never_its_secrets() -> None:
    ring = Keyring({"b": b"x" * 16, "a": b"y" * 16}, "b")
    assert ["a", "b"] == ring.ids
