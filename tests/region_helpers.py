"""Putting a region's Redis into a known state without Kafka: signed events through the
worker's own handler and Lua script."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

from shared.events import EpochEvent, Heartbeat, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys
from shared.tokenformat import hash_token
from tests.kafka_helpers import KEYRING
from workers.cache import RegionCache
from workers.handlers import RawRecord, prepare_batch

USER = "App\\Models\\User"
PARTITIONS = 3


def now_ms() -> int:
    return int(time.time() * 1000)


class RegionFixture:
    """A ready, fresh region cache fed through the real apply path."""

    def __init__(self, url: str, keys: RedisKeys | None = None) -> None:
        self.url = url
        self.keys = keys or RedisKeys()
        self._seq = itertools.count(1)
        self._offsets = itertools.count(0)

    def _apply(self, events: Sequence[TokenEvent | EpochEvent | Heartbeat]) -> None:
        records = []
        for event in events:
            value = encode(event)
            partition = event.partition if isinstance(event, Heartbeat) else 0
            records.append(
                RawRecord(
                    partition, next(self._offsets), event.key, value, KEYRING.sign(event.key, value)
                )
            )

        async def run() -> None:
            cache = RegionCache.from_url(self.url, self.keys)
            await cache.attach(PARTITIONS, {})
            batch = prepare_batch(records, KEYRING, self.keys)
            await cache.apply(batch, now_ms())
            await cache.close()

        asyncio.run(run())

    def beat(self, at_ms: int | None = None) -> None:
        """A heartbeat in every partition (makes the region fresh and ready)."""
        at = now_ms() if at_ms is None else at_ms
        self._apply([Heartbeat(p, at, 0) for p in range(PARTITIONS)])

    def token(
        self,
        plain: str,
        *,
        token_id: int = 1,
        owner: str = "1",
        abilities: tuple[str, ...] = ("*",),
        op: TokenOp = TokenOp.ISSUED,
        created_at: int | None = None,
        issued_at: int | None = None,
        expires_at: int | None = None,
    ) -> int:
        """Put a token record; returns its version."""
        seq = next(self._seq)
        created = now_ms() - 1000 if created_at is None else created_at
        issued = created if issued_at is None else issued_at
        self._apply(
            [
                TokenEvent(
                    seq,
                    op,
                    hash_token(plain),
                    token_id,
                    USER,
                    owner,
                    "name",
                    abilities,
                    created,
                    issued,
                    expires_at,
                    now_ms(),
                )
            ]
        )
        return seq

    def epoch(self, scope: str, before_ms: int) -> None:
        self._apply([EpochEvent(next(self._seq), scope, before_ms, now_ms())])
