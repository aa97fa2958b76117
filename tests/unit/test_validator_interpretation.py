"""The validator's reading of a region, without Redis: ``interpret`` (the function both
validators call on ``validate.lua``'s reply) and the whole ``Validator`` over an
in-memory region (``tests.unit.fakes.MemoryRegion``)."""

from __future__ import annotations

import socket
import time
import zlib
from typing import Any

import pytest

from shared.keys import RedisKeys
from shared.outcomes import Outcome, Principal
from shared.tokenformat import parse_presented
from shared.validator import FallbackAnswer, Policy, Request, Validator, interpret
from tests.unit.fakes import MemoryRegion, TokenFields

NOW = 1_800_000_000_000
ENTROPY = "q" * 40
TOKEN = f"{ENTROPY}{zlib.crc32(ENTROPY.encode()):08x}"
POLICY = Policy(staleness_budget_s=5, clock_skew_allowance_s=1)


def reply(
    *,
    ready: int = 1,
    oldest: int = NOW - 1000,
    epoch: int = 0,
    state: bytes | None = b"l",
    token_id: bytes | None = b"7",
    abilities: bytes | None = b'["orders:read","orders:write"]',
    created: bytes | None = str(NOW - 60_000).encode(),
    issued: bytes | None = str(NOW - 60_000).encode(),
    expires: bytes | None = b"",
) -> list[Any]:
    """A reply shaped as validate.lua returns it (missing fields are None)."""
    return [
        ready,
        oldest,
        epoch,
        state,
        token_id,
        b"App\\Models\\User",
        b"42",
        b"ci",
        abilities,
        created,
        issued,
        expires,
    ]


def request(
    text: str = TOKEN, required: tuple[str, ...] = (), mode: str = "all", now: int = NOW
) -> Request:
    parsed = parse_presented(text)
    assert parsed is not None
    return Request(text, parsed, required, mode, now)  # type: ignore[arg-type]


def outcome(
    answer: list[Any], req: Request | None = None, policy: Policy = POLICY
) -> tuple[Outcome, str]:
    result = interpret(answer, req or request(), policy)
    return result.outcome, result.reason


@pytest.mark.parametrize(
    "answer,expected",
    [
        (reply(ready=0), (Outcome.UNAVAILABLE, "not_ready")),
        (reply(ready=-1), (Outcome.UNAVAILABLE, "incomplete")),
        (reply(oldest=-1), (Outcome.UNAVAILABLE, "no_heartbeat")),
        (reply(oldest=NOW - 6_001), (Outcome.UNAVAILABLE, "stale")),
        (reply(oldest=NOW - 6_000), (Outcome.VALID, "")),
        (reply(oldest=NOW + 1_001), (Outcome.UNAVAILABLE, "clock_ahead")),
        (reply(oldest=NOW + 1_000), (Outcome.VALID, "")),
    ],
    ids=["not-ready", "incomplete", "no-heartbeat", "stale", "at-budget", "ahead", "at-skew"],
)
def test_a_region_that_is_not_ready_incomplete_or_stale_is_unavailable_never_valid(
    answer: list[Any], expected: tuple[Outcome, str]
) -> None:
    assert expected == outcome(answer)


def test_an_unavailable_region_says_so_whatever_the_token_record_holds() -> None:
    for state in (None, b"r", b"l"):
        assert Outcome.UNAVAILABLE == outcome(reply(ready=0, state=state))[0]
        assert Outcome.UNAVAILABLE == outcome(reply(oldest=NOW - 60_000, state=state))[0]


@pytest.mark.parametrize(
    "answer,req,expected",
    [
        (reply(state=None, token_id=None), None, (Outcome.INVALID, "unknown")),
        (reply(state=b"r", token_id=None, abilities=None), None, (Outcome.INVALID, "revoked")),
        (reply(), request(f"8|{TOKEN}"), (Outcome.INVALID, "unknown")),
        (reply(), request(f"7|{TOKEN}"), (Outcome.VALID, "")),
        (reply(expires=str(NOW).encode()), None, (Outcome.INVALID, "expired")),
        (reply(expires=str(NOW + 1).encode()), None, (Outcome.VALID, "")),
        (reply(epoch=NOW - 60_000 + 1), None, (Outcome.INVALID, "revoked")),
        (reply(epoch=NOW - 60_000), None, (Outcome.VALID, "")),
        (reply(epoch=NOW, issued=None), None, (Outcome.INVALID, "revoked")),
    ],
    ids=[
        "missing",
        "tombstone",
        "id-of-another-row",
        "id-of-its-row",
        "expired-now",
        "expires-later",
        "epoch-after-issue",
        "epoch-at-issue",
        "epoch-unknown-issue",
    ],
)
def test_missing_revoked_expired_and_epoch_revoked_tokens_are_invalid(
    answer: list[Any], req: Request | None, expected: tuple[Outcome, str]
) -> None:
    assert expected == outcome(answer, req)


def test_the_global_lifetime_counts_from_created_at() -> None:
    lifetime = Policy(staleness_budget_s=5, expiration_minutes=1)
    assert (Outcome.INVALID, "expired") == outcome(reply(), policy=lifetime)
    young = reply(created=str(NOW - 59_999).encode())
    assert (Outcome.VALID, "") == outcome(young, policy=lifetime)


@pytest.mark.parametrize(
    "abilities,required,mode,expected,missing",
    [
        (b'["orders:read"]', ("orders:read",), "all", Outcome.VALID, ()),
        (
            b'["orders:read"]',
            ("orders:read", "orders:write"),
            "all",
            Outcome.FORBIDDEN,
            ("orders:write",),
        ),
        (b'["orders:read"]', ("orders:read", "orders:write"), "any", Outcome.VALID, ()),
        (b'["orders:read"]', ("a", "b"), "any", Outcome.FORBIDDEN, ("a", "b")),
        (b'["*"]', ("anything", "at:all"), "all", Outcome.VALID, ()),
        (b'["Orders:Read"]', ("orders:read",), "all", Outcome.FORBIDDEN, ("orders:read",)),
        (b'["orders:*"]', ("orders:read",), "all", Outcome.FORBIDDEN, ("orders:read",)),
        (b"not json", ("orders:read",), "all", Outcome.FORBIDDEN, ("orders:read",)),
        (b"not json", (), "all", Outcome.VALID, ()),
        (b'["a",1,null,"b"]', ("b",), "all", Outcome.VALID, ()),
        (None, ("a",), "all", Outcome.FORBIDDEN, ("a",)),
    ],
    ids=[
        "has-it",
        "lacks-one-of-all",
        "has-one-of-any",
        "has-none-of-any",
        "wildcard",
        "case-sensitive",
        "no-prefix-wildcard",
        "undecodable-list-grants-nothing",
        "undecodable-list-nothing-required",
        "non-strings-ignored",
        "no-list",
    ],
)
def test_abilities_follow_sanctums_can_and_its_two_middlewares(
    abilities: bytes | None,
    required: tuple[str, ...],
    mode: str,
    expected: Outcome,
    missing: tuple[str, ...],
) -> None:
    result = interpret(reply(abilities=abilities), request(required=required, mode=mode), POLICY)
    assert (expected, missing) == (result.outcome, result.missing)
    if expected is Outcome.FORBIDDEN:
        assert "ability" == result.reason and result.principal is not None


def test_a_valid_answer_carries_the_principal_and_the_regions_freshness() -> None:
    result = interpret(reply(expires=str(NOW + 5000).encode()), request(), POLICY)
    assert Outcome.VALID == result.outcome
    assert (
        Principal("App\\Models\\User", "42", 7, "ci", ("orders:read", "orders:write"), NOW + 5000)
        == result.principal
    )
    assert 1.0 == result.freshness_s
    assert "region" == result.source


# -- the whole validator over an in-memory region ------------------------------------------


class Clock:
    def __init__(self, at_ms: int) -> None:
        self.at_ms = at_ms

    def __call__(self) -> float:
        return self.at_ms / 1000


def _validator(region: MemoryRegion, **kwargs: Any) -> Validator:
    return Validator(region, keys=region.keys, clock=Clock(NOW), **kwargs)  # type: ignore[arg-type]


def test_the_validator_reads_the_region_once_and_answers_by_its_rules() -> None:
    region = MemoryRegion(RedisKeys("unit")).make_ready(NOW - 500)
    region.put(
        TOKEN,
        TokenFields(7, abilities=("orders:read",), created_at_ms=NOW - 10, issued_at_ms=NOW - 10),
    )
    validator = _validator(region, policy=POLICY)
    assert Outcome.VALID == validator.validate(f"7|{TOKEN}", "orders:read").outcome
    assert Outcome.FORBIDDEN == validator.validate(TOKEN, "orders:write").outcome
    assert Outcome.INVALID == validator.validate(f"8|{TOKEN}").outcome
    assert 3 == region.calls
    assert (Outcome.INVALID, "malformed") == (
        validator.validate("7|nonsense").outcome,
        validator.validate("7|nonsense").reason,
    )
    assert 3 == region.calls, "a malformed token is judged without a Redis call"


def test_an_epoch_over_the_tokens_principal_or_ability_revokes_it() -> None:
    for scope in ("global", "principal:App\\Models\\User:1", "ability:orders:read"):
        region = MemoryRegion().make_ready(NOW - 500)
        region.put(
            TOKEN,
            TokenFields(
                7, abilities=("orders:read",), created_at_ms=NOW - 10, issued_at_ms=NOW - 10
            ),
        )
        region.epoch("ability:something-else", NOW)
        assert Outcome.VALID == _validator(region).validate(TOKEN).outcome
        region.epoch(scope, NOW - 5)
        assert (Outcome.INVALID, "revoked") == (
            _validator(region).validate(TOKEN).outcome,
            _validator(region).validate(TOKEN).reason,
        ), scope


def test_a_region_whose_epochs_or_partitions_hash_lost_its_presence_marker_is_unavailable() -> None:
    for lost in (RedisKeys().epochs, RedisKeys().partitions):
        region = MemoryRegion().make_ready(NOW - 500)
        region.put(TOKEN, TokenFields(7, created_at_ms=NOW - 10, issued_at_ms=NOW - 10))
        assert Outcome.VALID == _validator(region).validate(TOKEN).outcome
        region.hashes.pop(lost, None)  # evicted or deleted
        result = _validator(region).validate(TOKEN)
        assert (Outcome.UNAVAILABLE, "incomplete") == (result.outcome, result.reason), lost


def test_an_unreachable_region_is_unavailable_and_the_fallback_policy_asks_the_store() -> None:
    region = MemoryRegion().make_ready(NOW - 500)
    region.put(TOKEN, TokenFields(7, created_at_ms=NOW - 10, issued_at_ms=NOW - 10))
    region.down = True
    result = _validator(region).validate(TOKEN)
    assert (Outcome.UNAVAILABLE, "redis_unreachable") == (result.outcome, result.reason)

    asked: list[str] = []
    owner = Principal("App\\Models\\User", "1", 7, "n", ("read",), None)

    class Store:
        def lookup(self, token: str) -> FallbackAnswer:
            asked.append(token)
            return FallbackAnswer(owner, NOW - 10, NOW - 10)

    fallback = _validator(region, policy=Policy(on_unavailable="fallback"), fallback=Store())
    answer = fallback.validate(TOKEN, "write")
    assert [TOKEN] == asked
    assert (Outcome.FORBIDDEN, "store", ("write",)) == (
        answer.outcome,
        answer.source,
        answer.missing,
    )


def test_a_redis_nobody_listens_on_is_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    validator = Validator.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        result = validator.validate(TOKEN)
        assert (Outcome.UNAVAILABLE, "redis_unreachable") == (result.outcome, result.reason)
    finally:
        validator.close()


def test_usage_is_flushed_by_the_interval_it_is_given() -> None:
    from shared.usage import UsageRecorder

    merged: list[list[Any]] = []

    class Client:
        def register_script(self, _script: str) -> Any:
            return lambda keys, args: merged.append(list(args))

    recorder = UsageRecorder(Client(), RedisKeys(), interval_s=0.05)  # type: ignore[arg-type]
    recorder.record(7, NOW)
    recorder.record(7, NOW + 5)
    recorder.record(7, NOW + 1)
    recorder.record(None, NOW)
    assert [] == merged, "nothing leaves before the thread runs"
    recorder.start()
    deadline = time.monotonic() + 10
    while not merged and time.monotonic() < deadline:
        time.sleep(0.01)
    recorder.stop()
    # the number of (id, time) pairs, then the pairs: no counters without observe()
    assert [[1, "7", NOW + 5]] == merged, "one entry per token: its newest use"
