"""The apply script against a real Redis, without Kafka: what a region keeps, refuses and denies.

Records go through the worker's own handler (``prepare_batch``) and Lua script, signed
with the test keyring, exactly as a worker applies a fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
import pytest
import redis

from shared.events import EpochEvent, Heartbeat, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys
from shared.tokenformat import hash_token
from shared.validator import Outcome, Policy, Validator
from tests.kafka_helpers import KEYRING
from workers.cache import RegionCache
from workers.handlers import RawRecord, prepare_batch

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
PLAIN = "I" * 40  # a legacy (checksum-less) Sanctum token


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(event: TokenEvent | EpochEvent | Heartbeat, partition: int, offset: int) -> RawRecord:
    value = encode(event)
    return RawRecord(partition, offset, event.key, value, KEYRING.sign(event.key, value))


def signed_json(data: dict[str, object], key: bytes, partition: int, offset: int) -> RawRecord:
    """A record the relay signed whose body the decoder refuses (e.g. too many abilities)."""
    value = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return RawRecord(partition, offset, key, value, KEYRING.sign(key, value))


def token(
    seq: int,
    op: TokenOp = TokenOp.ISSUED,
    expires_at: int | None = None,
    plain: str = PLAIN,
) -> TokenEvent:
    created = now_ms() - 10_000
    return TokenEvent(
        seq, op, hash_token(plain), 1, USER, "1", "n", ("*",), created, created, expires_at, created
    )


def beats(offset: int) -> list[RawRecord]:
    return [signed(Heartbeat(p, now_ms(), 0), p, offset) for p in range(3)]


def apply(url: str, *batches: list[RawRecord]) -> None:
    async def run() -> None:
        keys = RedisKeys()
        cache = RegionCache.from_url(url, keys)
        await cache.attach(3, {0: 0, 1: 0, 2: 0})
        for records in batches:
            result = await cache.apply(prepare_batch(records, KEYRING, keys), now_ms())
            assert not result.lost
        await cache.close()

    asyncio.run(run())


def outcome(url: str, plain: str = PLAIN) -> tuple[Outcome, str | None]:
    validator = Validator.from_url(url, keys=RedisKeys(), policy=Policy())
    try:
        result = validator.validate(f"1|{plain}")
        return result.outcome, result.reason
    finally:
        validator.close()


def test_a_token_whose_expiry_was_shortened_into_the_past_stays_invalid_when_older_records_replay(
    redis_url: str,
) -> None:
    apply(redis_url, [signed(token(1), 0, 0), *beats(1)])
    assert Outcome.VALID == outcome(redis_url)[0]
    apply(redis_url, [signed(token(2, TokenOp.UPDATED, expires_at=now_ms() - 120_000), 0, 1)])
    assert Outcome.INVALID == outcome(redis_url)[0]
    apply(redis_url, [signed(token(1), 0, 0), *beats(2)])  # a replay of the older record
    assert (Outcome.INVALID, "expired") == outcome(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        version = client.hget(RedisKeys().token(hash_token(PLAIN)), "v")
        ttl_ms = client.pttl(RedisKeys().token(hash_token(PLAIN)))
    finally:
        client.close()
    assert b"2" == version
    assert ttl_ms > 24 * 3600 * 1000  # the version outlives the expiry by the tombstone TTL


def test_a_token_that_expires_later_keeps_its_version_past_its_expiry(redis_url: str) -> None:
    expires = now_ms() + 5_000
    apply(redis_url, [signed(token(1, expires_at=expires), 0, 0), *beats(1)])
    client = redis.Redis.from_url(redis_url)
    try:
        ttl_ms = client.pttl(RedisKeys().token(hash_token(PLAIN)))
    finally:
        client.close()
    assert ttl_ms > 24 * 3600 * 1000


def test_a_signed_revocation_too_large_to_decode_still_denies_the_token(redis_url: str) -> None:
    apply(redis_url, [signed(token(1), 0, 0), *beats(1)])
    assert Outcome.VALID == outcome(redis_url)[0]
    body = token(2, TokenOp.REVOKED).to_json()
    body["abilities"] = [f"ability-{i:04d}" for i in range(300)]  # past the 256 shape limit
    key = hash_token(PLAIN).encode()
    apply(redis_url, [signed_json(body, key, 0, 1), *beats(2)])
    assert Outcome.INVALID == outcome(redis_url)[0]
    client = redis.Redis.from_url(redis_url)
    try:
        assert b"r" == client.hget(RedisKeys().token(hash_token(PLAIN)), "s")
        assert 0 == client.zcard(RedisKeys().dead_lettered)  # denied, so not dead-lettered
    finally:
        client.close()


def test_a_signed_grant_that_fails_the_shape_limits_denies_instead_of_granting(
    redis_url: str,
) -> None:
    apply(redis_url, [signed(token(1), 0, 0), *beats(1)])
    body = token(2, TokenOp.UPDATED).to_json()
    body["name"] = "x" * 5000  # longer than a name may be
    apply(redis_url, [signed_json(body, hash_token(PLAIN).encode(), 0, 1), *beats(2)])
    assert Outcome.INVALID == outcome(redis_url)[0]


def test_unverified_and_undecodable_records_are_recorded_as_dead_letters_with_their_seq(
    redis_url: str,
) -> None:
    forged_event = token(7, TokenOp.REVOKED)
    forged_value = encode(forged_event)
    forged = RawRecord(0, 1, forged_event.key, forged_value, [("ts-kid", b"test-1")])
    garbage = RawRecord(1, 4, b"k", b"not json at all", KEYRING.sign(b"k", b"not json at all"))
    apply(redis_url, [signed(token(1), 0, 0), forged, garbage, *beats(5)])
    client = redis.Redis.from_url(redis_url)
    try:
        letters = client.zrange(RedisKeys().dead_lettered, 0, -1, withscores=True)
    finally:
        client.close()
    assert [(b"1:4", -1.0), (b"0:1", 7.0)] == letters
    assert Outcome.VALID == outcome(redis_url)[0]  # a forgery denies nothing


def test_a_missing_epochs_hash_makes_the_region_unavailable_not_unrevoked(redis_url: str) -> None:
    apply(redis_url, [signed(token(1), 0, 0), *beats(1)])
    apply(redis_url, [signed(EpochEvent(2, "global", now_ms(), now_ms()), 1, 2), *beats(3)])
    assert Outcome.INVALID == outcome(redis_url)[0]
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(RedisKeys().epochs)  # what allkeys-lru does to a cold hash
    finally:
        client.close()
    assert (Outcome.UNAVAILABLE, "incomplete") == outcome(redis_url)


def test_a_batch_that_starts_past_what_the_cache_recorded_is_refused(redis_url: str) -> None:
    keys = RedisKeys()

    async def run() -> tuple[bool, bool]:
        cache = RegionCache.from_url(redis_url, keys)
        await cache.attach(3, {0: 0, 1: 0, 2: 0})
        first = prepare_batch([signed(token(1), 0, 0)], KEYRING, keys)
        first.starts = {0: 0}
        ok = await cache.apply(first, now_ms())
        gap = prepare_batch([signed(token(3, TokenOp.REVOKED), 0, 9)], KEYRING, keys)
        gap.starts = {0: 5}  # the cache recorded 1: offsets 1..4 are missing here
        refused = await cache.apply(gap, now_ms())
        await cache.close()
        return ok.rewind is None, refused.rewind == {0: 1}

    assert (True, True) == asyncio.run(run())
    client = redis.Redis.from_url(redis_url)
    try:
        assert b"1" == client.hget(keys.token(hash_token(PLAIN)), "v")  # nothing of it applied
    finally:
        client.close()


def test_region_status_does_not_call_a_cache_ready_whose_epochs_hash_is_missing(
    redis_url: str,
) -> None:
    from shared.region_state import read_region_state

    apply(redis_url, [signed(token(1), 0, 0), *beats(1)])
    client = redis.Redis.from_url(redis_url)
    try:
        assert read_region_state(client, RedisKeys(), "eu").ready
        client.delete(RedisKeys().epochs)
        assert not read_region_state(client, RedisKeys(), "eu").ready
    finally:
        client.close()


def test_a_rebuild_abandoned_half_way_is_taken_over_and_never_looks_ready(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.cache
    from shared.region_state import read_region_state

    monkeypatch.setattr(workers.cache, "BUILD_STALL_S", 0.5, raising=False)
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    try:
        # what a worker that died while clearing the namespace leaves behind
        client.hset(keys.meta, mapping={"generation": "dead", "building": "0", "ready": "1"})
        client.hset(keys.token("f" * 64), mapping={"v": "9", "s": "l"})
        assert not read_region_state(client, keys, "eu").ready

        async def run() -> tuple[bool, str]:
            cache = RegionCache.from_url(redis_url, keys)
            new = await cache.attach(3, {0: 0, 1: 0, 2: 0})
            await cache.close()
            return new, cache.generation

        new, generation = asyncio.run(run())
        assert new and "dead" != generation
        assert not client.exists(keys.token("f" * 64))
    finally:
        client.close()


DAY_MS = 24 * 3600 * 1000
REPLAYED = "A" * 40  # legacy shape (40 alphanumerics, no checksum)


def apply_at(url: str, records: Sequence[RawRecord], at_ms: int) -> None:
    """One batch through the worker's verify/decode and the apply script, as the worker
    would run it at wall-clock time ``at_ms``."""

    async def run() -> None:
        keys = RedisKeys()
        cache = RegionCache.from_url(url, keys)
        try:
            await cache.attach(3, {})
            await cache.apply(prepare_batch(records, KEYRING, keys), at_ms)
        finally:
            await cache.close()

    asyncio.run(run())


@pytest.mark.parametrize("lifetime_minutes", [None, 60])
def test_a_replayed_issued_record_never_revives_a_token_revoked_long_ago(
    redis_url: str, lifetime_minutes: int | None
) -> None:
    """A revoked token's tombstone lived for the tombstone TTL (30 days), then a replay of
    its original, correctly signed issued record (the token never expires) made it valid
    again. Also under a global lifetime (TOKENSYNC_TOKEN_EXPIRATION)."""
    keys = RedisKeys()
    now = now_ms()
    issued_at = now - 40 * DAY_MS
    token_hash = hash_token(REPLAYED)
    issued = TokenEvent(
        1, TokenOp.ISSUED, token_hash, 7, USER, "1", "laptop", ("*",),
        issued_at, issued_at, None, issued_at,
    )  # fmt: skip
    revoked = TokenEvent(
        2, TokenOp.REVOKED, token_hash, 7, USER, "1", "laptop", ("*",),
        issued_at, issued_at, None, now - 31 * DAY_MS,
    )  # fmt: skip
    # 40 days ago the token was issued; 31 days ago a responder revoked it
    apply_at(redis_url, [signed(issued, 0, 0)], issued_at)
    apply_at(redis_url, [signed(revoked, 0, 1)], now - 31 * DAY_MS)
    apply_at(redis_url, [signed(Heartbeat(p, now, 2), p, 0 if p else 2) for p in range(3)], now)
    validator = Validator.from_url(
        redis_url, keys=keys, policy=Policy(expiration_minutes=lifetime_minutes)
    )
    try:
        assert Outcome.INVALID == validator.validate(f"7|{REPLAYED}").outcome
        # today: the original issued record, byte for byte, is produced to the topic again
        later = now_ms()
        replay = [
            signed(issued, 0, 3),
            *(signed(Heartbeat(p, later, 2), p, 4 if p == 0 else 1) for p in range(3)),
        ]
        apply_at(redis_url, replay, later)
        result = validator.validate(f"7|{REPLAYED}")
        assert result.outcome is not Outcome.VALID, (
            f"a token revoked 31 days ago is {result.outcome.value} again after one replayed "
            f"signed record (principal {result.principal})"
        )
    finally:
        validator.close()
    client = redis.Redis.from_url(redis_url)
    try:
        assert (b"2", -1) == (
            client.hget(keys.token(token_hash), "v"),
            client.pttl(keys.token(token_hash)),
        )
    finally:
        client.close()
