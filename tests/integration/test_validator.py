"""Every validation outcome and every Sanctum rule, against a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
import redis

from producer.fallback import StoreFallback
from producer.store import TokenStore
from shared.events import GLOBAL_SCOPE, TokenOp, ability_scope, principal_scope
from shared.keys import RedisKeys
from shared.tokenformat import checksum, hash_token
from shared.validator import AsyncValidator, FallbackAnswer, Outcome, Policy, Principal, Validator
from tests.region_helpers import USER, RegionFixture, now_ms

pytestmark = pytest.mark.integration


def sanctum(entropy: str, prefix: str = "") -> str:
    return f"{prefix}{entropy}{checksum(entropy)}"


A = sanctum("a" * 40)
B = sanctum("B" * 40)
LEGACY_40 = "L" * 40
LEGACY_80 = "m" * 80


@pytest.fixture
def region(redis_url: str) -> RegionFixture:
    fixture = RegionFixture(redis_url)
    fixture.beat()
    return fixture


@pytest.fixture
def validator(redis_url: str) -> Validator:
    v = Validator.from_url(redis_url)
    yield v
    v.close()


def test_a_live_token_is_valid_with_its_principal(
    region: RegionFixture, validator: Validator
) -> None:
    region.token(A, token_id=7, owner="42", abilities=("read", "write"))
    for presented in (A, f"7|{A}"):
        result = validator.validate(presented)
        assert Outcome.VALID == result.outcome
        assert result.principal is not None
        assert (USER, "42", 7, ("read", "write")) == (
            result.principal.tokenable_type,
            result.principal.tokenable_id,
            result.principal.token_id,
            result.principal.abilities,
        )


def test_a_wrong_id_prefix_an_unknown_token_and_a_revoked_one_are_invalid(
    region: RegionFixture, validator: Validator
) -> None:
    region.token(A, token_id=7)
    region.token(B, token_id=8)
    region.token(B, token_id=8, op=TokenOp.REVOKED)
    assert "unknown" == validator.validate(f"8|{A}").reason
    assert "unknown" == validator.validate(sanctum("z" * 40)).reason
    assert ("invalid", "revoked") == (validator.validate(B).outcome, validator.validate(B).reason)


def test_expiry_per_token_and_global_lifetime_both_apply(
    redis_url: str, region: RegionFixture
) -> None:
    now = now_ms()
    region.token(A, expires_at=now - 1)
    region.token(B, created_at=now - 3 * 60_000, expires_at=now + 3_600_000)
    plain = Validator.from_url(redis_url)
    lifetime = Validator.from_url(redis_url, policy=Policy(expiration_minutes=2))
    assert "expired" == plain.validate(A).reason
    assert Outcome.VALID == plain.validate(B).outcome
    assert "expired" == lifetime.validate(B).reason
    plain.close()
    lifetime.close()


def test_abilities_follow_sanctum_all_any_wildcard_and_case(
    region: RegionFixture, validator: Validator
) -> None:
    region.token(A, abilities=("orders:read", "orders:write"))
    region.token(B, abilities=("*",))
    assert Outcome.VALID == validator.validate(A, ["orders:read", "orders:write"]).outcome
    forbidden = validator.validate(A, ["orders:read", "admin"])
    assert (Outcome.FORBIDDEN, ("admin",)) == (forbidden.outcome, forbidden.missing)
    assert Outcome.VALID == validator.validate(A, ["admin", "orders:read"], mode="any").outcome
    assert Outcome.FORBIDDEN == validator.validate(A, ["admin", "root"], mode="any").outcome
    assert Outcome.FORBIDDEN == validator.validate(A, ["Orders:Read"]).outcome
    assert Outcome.VALID == validator.validate(B, ["anything", "at:all"]).outcome


def test_epochs_of_principal_ability_and_global_revoke_older_tokens_only(
    region: RegionFixture, validator: Validator
) -> None:
    t = now_ms()
    region.token(A, owner="1", abilities=("export",), issued_at=t - 10_000)
    region.token(B, owner="2", abilities=("read",), issued_at=t - 10_000)
    region.epoch(principal_scope(USER, "1"), t - 20_000)  # older than the token: no effect
    assert Outcome.VALID == validator.validate(A).outcome
    region.epoch(principal_scope(USER, "1"), t - 5_000)
    assert ("invalid", "revoked") == (validator.validate(A).outcome, validator.validate(A).reason)
    assert Outcome.VALID == validator.validate(B).outcome
    region.epoch(ability_scope("read"), t)
    assert "revoked" == validator.validate(B).reason
    fresh = sanctum("F" * 40)
    region.token(fresh, owner="1", abilities=("read",), issued_at=t + 1)
    assert Outcome.VALID == validator.validate(fresh).outcome
    region.epoch(GLOBAL_SCOPE, t + 2)
    assert "revoked" == validator.validate(fresh).reason


def test_a_token_revoked_by_an_epoch_it_shares_with_10000_others(
    region: RegionFixture, validator: Validator, redis_url: str
) -> None:
    t = now_ms()
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for i in range(10_000):  # legacy-shaped tokens: 40 digits each
        pipe.hset(
            keys.token(hash_token(f"{i:040d}")),
            mapping={
                "v": 1,
                "s": "l",
                "id": i,
                "tt": USER,
                "ti": "99",
                "n": "bulk",
                "ab": '["*"]',
                "ca": t - 60_000,
                "ia": t - 60_000,
                "ea": "",
            },
        )
    pipe.execute()
    client.close()
    region.token(A, owner="99", issued_at=t - 60_000)
    sample = [f"{i:040d}" for i in range(0, 10_000, 997)]
    assert {Outcome.VALID} == {validator.validate(x).outcome for x in [A, *sample]}
    region.epoch(principal_scope(USER, "99"), t)
    assert {"revoked"} == {validator.validate(x).reason for x in [A, *sample]}


def test_legacy_tokens_without_checksum_still_validate(
    region: RegionFixture, validator: Validator
) -> None:
    region.token(LEGACY_40, token_id=3)
    region.token(LEGACY_80, token_id=4)
    assert Outcome.VALID == validator.validate(f"3|{LEGACY_40}").outcome
    assert Outcome.VALID == validator.validate(LEGACY_80).outcome
    prefixed = sanctum("P" * 40, prefix="acme_")
    region.token(prefixed, token_id=5)
    assert Outcome.VALID == validator.validate(f"5|{prefixed}").outcome


def test_malformed_tokens_are_invalid_without_a_redis_call(validator: Validator) -> None:
    bad = [
        "",
        "|",
        "abc",
        "1|",
        "x|" + A,
        A[:-1] + ("0" if A[-1] != "0" else "1"),
        A + "\x00",
        "é" * 48,
        "1|" + "a" * 47,
        "9" * 30 + "|" + A,
        " " + A,
        A * 10,
    ]
    calls_before = _script_calls(validator.client)
    results = [validator.validate(b) for b in bad]
    assert {("invalid", "malformed")} == {(r.outcome.value, r.reason) for r in results}
    assert _script_calls(validator.client) == calls_before, "a malformed token reached Redis"
    validator.validate(A)
    assert _script_calls(validator.client) == calls_before + 1  # the counter does count


def _script_calls(client: redis.Redis) -> int:
    """Scripts the server ran so far (``INFO commandstats``: EVALSHA and EVAL)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def test_a_region_not_ready_or_stale_is_unavailable_never_valid(redis_url: str) -> None:
    region = RegionFixture(redis_url)
    validator = Validator.from_url(
        redis_url, policy=Policy(staleness_budget_s=1.0, clock_skew_allowance_s=0.0)
    )
    assert ("unavailable", "not_ready") == (
        validator.validate(A).outcome,
        validator.validate(A).reason,
    )
    region.token(A)
    region.beat(now_ms() - 5_000)
    assert "stale" == validator.validate(A).reason
    region.beat()
    assert Outcome.VALID == validator.validate(A).outcome
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    assert ("unavailable", "not_ready") == (
        validator.validate(A).outcome,
        validator.validate(A).reason,
    )
    validator.close()


def test_an_unreachable_redis_is_unavailable() -> None:
    from stack.process import free_port

    validator = Validator.from_url(f"redis://127.0.0.1:{free_port()}/0")
    assert ("unavailable", "redis_unreachable") == (
        validator.validate(A).outcome,
        validator.validate(A).reason,
    )


def test_the_fallback_policy_asks_the_store_and_applies_the_same_rules(redis_url: str) -> None:
    class Store:
        def lookup(self, token: str) -> FallbackAnswer:
            if token == A:
                return FallbackAnswer(Principal(USER, "1", 1, "n", ("read",), None), now_ms())
            return FallbackAnswer(None)

    deny = Validator.from_url(redis_url, fallback=Store())
    fall = Validator.from_url(redis_url, policy=Policy(on_unavailable="fallback"), fallback=Store())
    assert Outcome.UNAVAILABLE == deny.validate(A).outcome
    assert ("valid", "store") == (fall.validate(A).outcome.value, fall.validate(A).source)
    assert Outcome.FORBIDDEN == fall.validate(A, ["write"]).outcome
    assert Outcome.INVALID == fall.validate(B).outcome
    deny.close()
    fall.close()


def test_the_async_validator_gives_the_same_answers(region: RegionFixture, redis_url: str) -> None:
    region.token(A, abilities=("read",))

    async def run() -> list[Outcome]:
        v = AsyncValidator.from_url(redis_url)
        try:
            return [
                (await v.validate(t, abilities)).outcome
                for t, abilities in ((A, ()), (A, ("write",)), (B, ()), ("bad", ()))
            ]
        finally:
            await v.close()

    assert [Outcome.VALID, Outcome.FORBIDDEN, Outcome.INVALID, Outcome.INVALID] == asyncio.run(
        run()
    )


def test_the_async_validator_records_usage_like_the_sync_one(
    region: RegionFixture, redis_url: str
) -> None:
    region.token(A, token_id=41)

    async def run() -> None:
        v = AsyncValidator.from_url(redis_url)
        v.enable_usage(interval_s=60)  # flushed by close(), not by the timer
        try:
            for _ in range(3):
                assert (await v.validate(A)).outcome is Outcome.VALID
            assert (await v.validate(B)).outcome is Outcome.INVALID
        finally:
            await v.close()

    before = int(time.time() * 1000)
    asyncio.run(run())
    client = redis.Redis.from_url(redis_url)
    try:
        usage = client.hgetall(RedisKeys().usage)
    finally:
        client.close()
    assert set(usage) == {b"41"}
    assert int(usage[b"41"]) >= before


def test_the_sql_fallback_answers_from_the_store_when_the_region_is_unavailable(
    redis_url: str, database_url: str
) -> None:
    from producer.fallback import StoreFallback
    from producer.schema import create_engine, migrate
    from producer.store import TokenStore

    engine = create_engine(database_url)
    migrate(engine)
    store = TokenStore(engine)
    issued = store.issue(USER, 3, "fallback", ["read"])
    validator = Validator.from_url(
        redis_url, policy=Policy(on_unavailable="fallback"), fallback=StoreFallback(store)
    )
    result = validator.validate(issued.plain_text_token, ["read"])
    assert ("valid", "store", "3") == (
        result.outcome.value,
        result.source,
        result.principal.tokenable_id if result.principal else None,
    )
    store.revoke_token(issued.id)
    assert Outcome.INVALID == validator.validate(issued.plain_text_token).outcome
    validator.close()
    engine.dispose()


def test_a_validator_clock_an_hour_behind_never_revives_an_expired_token_through_the_store(
    redis_url: str, store: TokenStore
) -> None:
    """The region rightly refuses to answer when its heartbeat lies ahead of the
    validator's clock; the store then answers under the fallback policy, judged with the
    store's clock, not the validator's wrong one."""
    expired_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=30)
    token = store.issue(USER, 1, "expired", ["*"], expires_at=expired_at)
    RegionFixture(redis_url).beat()  # the region is fresh by every right clock
    right = Validator.from_url(
        redis_url, policy=Policy(on_unavailable="fallback"), fallback=StoreFallback(store)
    )
    behind = Validator.from_url(
        redis_url,
        policy=Policy(on_unavailable="fallback"),
        fallback=StoreFallback(store),
        clock=lambda: time.time() - 3600,  # an NTP step back of one hour on this host
    )
    try:
        assert Outcome.INVALID == right.validate(token.plain_text_token).outcome
        result = behind.validate(token.plain_text_token)
        assert result.outcome is not Outcome.VALID, (
            f"a token expired 30 min ago is valid through the {result.source} on a validator "
            f"whose clock is an hour behind"
        )
    finally:
        right.close()
        behind.close()


def test_a_heartbeat_from_a_relay_clock_an_hour_ahead_makes_the_region_unavailable(
    region: RegionFixture, redis_url: str
) -> None:
    region.token(A)
    region.beat(now_ms() + 3_600_000)  # the relay's clock stepped an hour ahead
    validator = Validator.from_url(redis_url, policy=Policy(clock_skew_allowance_s=1.0))
    result = validator.validate(A)
    assert ("unavailable", "clock_ahead") == (result.outcome.value, result.reason)
    validator.close()


def test_a_validator_clock_behind_the_heartbeats_makes_the_region_unavailable(
    region: RegionFixture, redis_url: str
) -> None:
    region.token(A)
    behind = Validator.from_url(
        redis_url,
        policy=Policy(clock_skew_allowance_s=1.0),
        clock=lambda: time.time() - 60,  # this host's clock is a minute late
    )
    within = Validator.from_url(
        redis_url, policy=Policy(clock_skew_allowance_s=1.0), clock=lambda: time.time() - 0.5
    )
    result = behind.validate(A)
    assert ("unavailable", "clock_ahead") == (result.outcome.value, result.reason)
    assert Outcome.VALID == within.validate(A).outcome  # skew inside the allowance is fine
    behind.close()
    within.close()
