"""Security review 11/12 (attack1112): a replayed Kafka record brings a revoked token back.

A revoked token's tombstone (the version that refuses older records) lives for the
tombstone TTL (30 days) after it was applied, then Redis drops it. Records carry no time
bound the worker checks, so anyone who can write to the token topic (or a mirror of it)
can replay the token's original, correctly signed ``issued`` record after that: every
region applies it as new, and the token, which never expires, is *valid* again. The same
record, being the newest of its key, also survives compaction in place of the revocation,
so every region built later (new region, rebuild after a lost cache) takes it as valid.
Real Redis, the worker's own verify/decode and apply script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from shared.events import Heartbeat, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys
from shared.tokenformat import hash_token
from shared.validator import Outcome, Validator
from tests.kafka_helpers import KEYRING
from workers.cache import RegionCache
from workers.handlers import RawRecord, prepare_batch

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
PLAIN = "7|" + "A" * 40  # legacy shape (40 alphanumerics, no checksum) is accepted
DAY_MS = 24 * 3600 * 1000
PARTITIONS = 3


def _record(event: TokenEvent | Heartbeat, partition: int, offset: int) -> RawRecord:
    """The record as the relay signed it (replaying it keeps its signature valid)."""
    value = encode(event)
    return RawRecord(partition, offset, event.key, value, KEYRING.sign(event.key, value))


def _apply(url: str, keys: RedisKeys, records: Sequence[RawRecord], now_ms: int) -> None:
    """One batch through the worker's verify/decode and the apply script, as the worker
    would run it at wall-clock time ``now_ms``."""

    async def run() -> None:
        cache = RegionCache.from_url(url, keys)
        try:
            await cache.attach(PARTITIONS, {})
            await cache.apply(prepare_batch(records, KEYRING, keys), now_ms)
        finally:
            await cache.close()

    asyncio.run(run())


def test_a_replayed_issued_record_never_revives_a_token_revoked_long_ago(redis_url: str) -> None:
    keys = RedisKeys()
    now = int(time.time() * 1000)
    issued_at = now - 40 * DAY_MS
    token_hash = hash_token(PLAIN.split("|", 1)[1])
    issued = TokenEvent(
        1, TokenOp.ISSUED, token_hash, 7, USER, "1", "laptop", ("*",),
        issued_at, issued_at, None, issued_at,
    )  # fmt: skip
    revoked = TokenEvent(
        2, TokenOp.REVOKED, token_hash, 7, USER, "1", "laptop", ("*",),
        issued_at, issued_at, None, now - 31 * DAY_MS,
    )  # fmt: skip
    # 40 days ago the token was issued; 31 days ago a responder revoked it
    _apply(redis_url, keys, [_record(issued, 0, 0)], issued_at)
    _apply(redis_url, keys, [_record(revoked, 0, 1)], now - 31 * DAY_MS)
    beats = [_record(Heartbeat(p, now, 2), p, 0 if p else 2) for p in range(PARTITIONS)]
    _apply(redis_url, keys, beats, now)
    validator = Validator.from_url(redis_url, keys=keys)
    try:
        assert Outcome.INVALID == validator.validate(PLAIN).outcome
        # today: the original issued record, byte for byte, is produced to the topic again
        later = int(time.time() * 1000)
        replay = [
            _record(issued, 0, 3),
            *(_record(Heartbeat(p, later, 2), p, 4 if p == 0 else 1) for p in range(PARTITIONS)),
        ]
        _apply(redis_url, keys, replay, later)
        result = validator.validate(PLAIN)
        assert result.outcome is not Outcome.VALID, (
            f"a token revoked 31 days ago is {result.outcome.value} again after one replayed "
            f"signed record (principal {result.principal})"
        )
    finally:
        validator.close()
