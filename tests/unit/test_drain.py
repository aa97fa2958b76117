"""The worker's drain loop: fetches become batches, applied in order, acknowledged after."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from shared.errors import CacheUnavailableError
from workers.drain import Applied, BatchDrain
from workers.handlers import PreparedBatch, RawRecord, Record

TOPIC = "t.tokens.v1"


@dataclass
class FakeConsumer:
    """faust's consumer as the drain uses it: fetches served from a queue of record maps."""

    fetches: deque[dict[TP, list[RawRecord]]]
    commits: list[dict[TP, int]] = field(default_factory=list)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    should_stop: bool = False

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[RawRecord]], None]:
        await asyncio.sleep(0)
        if not self.fetches:
            self._stopped.set()
            return {}, None
        return self.fetches.popleft(), None

    def assignment(self) -> set[TP]:
        return {TP(TOPIC, 0), TP(TOPIC, 1)}

    def topic_partitions(self, topic: str) -> int | None:
        return 2 if topic == TOPIC else None

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.commits.append(dict(offsets))
        return True


@dataclass
class FakeApp:
    consumer: FakeConsumer
    monitor: Any = None


def records(partition: int, *offsets: int) -> list[RawRecord]:
    return [RawRecord(partition, o, b"k", b"v", ()) for o in offsets]


def prepare(batch: Sequence[Record]) -> PreparedBatch:
    prepared = PreparedBatch()
    for r in batch:
        prepared.next_offsets[r.partition] = max(
            prepared.next_offsets.get(r.partition, 0), r.offset + 1
        )
        prepared.values.append(r.value or b"")
    return prepared


@dataclass
class FakeFetcher:
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)


def run(drain: BatchDrain, consumer: FakeConsumer) -> None:
    """Install the drain as faust would find it, then run it as faust's Fetcher does."""

    async def go() -> None:
        app = FakeApp(consumer)
        drain.install(app)
        await app.consumer._drain_messages(FakeFetcher())  # type: ignore[attr-defined]

    asyncio.run(go())


def test_fetches_are_applied_in_order_and_committed_only_once_applied() -> None:
    applied: list[dict[int, int]] = []

    async def apply(batch: PreparedBatch, now_ms: int) -> Applied:
        await asyncio.sleep(0.001)
        applied.append(dict(batch.next_offsets))
        return Applied.APPLIED

    consumer = FakeConsumer(
        deque(
            [
                {TP(TOPIC, 0): records(0, 0, 1), TP("other", 0): records(0, 9)},
                {TP(TOPIC, 1): records(1, 0), TP(TOPIC, 0): records(0, 2)},
                {TP(TOPIC, 0): records(0, 3, 4)},
            ]
        )
    )
    drain = BatchDrain(TOPIC, prepare, apply, asyncio.Event())
    run(drain, consumer)
    assert applied == [{0: 2}, {1: 1, 0: 3}, {0: 5}]
    assert drain.batches == 3
    # the last commit (at the end of the loop) holds exactly what Redis applied
    assert consumer.commits[-1] == {TP(TOPIC, 0): 5, TP(TOPIC, 1): 1}


def test_an_unavailable_cache_is_retried_and_a_lost_one_stops_the_drain() -> None:
    calls: list[str] = []
    stopped = asyncio.Event()

    async def apply(batch: PreparedBatch, now_ms: int) -> Applied:
        calls.append("try")
        if len(calls) == 1:
            raise CacheUnavailableError("redis down")
        stopped.set()
        return Applied.STOP  # the cache was lost: the worker rebuilds

    consumer = FakeConsumer(deque([{TP(TOPIC, 0): records(0, 0)}, {TP(TOPIC, 0): records(0, 1)}]))
    drain = BatchDrain(TOPIC, prepare, apply, stopped)
    run(drain, consumer)
    assert calls == ["try", "try"]
    assert consumer.commits == []  # nothing acknowledged from a lost cache


def test_each_batch_states_where_it_was_read_from_and_a_refused_one_rewinds_to_the_cache() -> None:
    seen: list[tuple[dict[int, int], int]] = []
    rewinds: list[str] = []

    async def apply(batch: PreparedBatch, now_ms: int) -> Applied:
        seen.append((dict(batch.starts), batch.partition_count))
        if len(seen) == 2:
            return Applied.REWIND  # the cache holds offsets up to 1 only (restored)
        return Applied.APPLIED

    async def rewind() -> dict[int, int]:
        rewinds.append("rewind")
        return {0: 1}

    consumer = FakeConsumer(
        deque(
            [
                {TP(TOPIC, 0): records(0, 0)},
                {TP(TOPIC, 0): records(0, 5, 6)},
                {TP(TOPIC, 0): records(0, 7)},  # prefetched behind the refused batch: dropped
                {TP(TOPIC, 0): records(0, 1, 2)},  # read again from the cache's offset
            ]
        )
    )
    drain = BatchDrain(TOPIC, prepare, apply, asyncio.Event(), rewind=rewind)
    drain.expect({0: 0})
    run(drain, consumer)
    assert [({0: 0}, 2), ({0: 1}, 2), ({0: 1}, 2)] == seen
    assert ["rewind"] == rewinds
    assert consumer.commits[-1] == {TP(TOPIC, 0): 3}


def test_a_rewind_that_fails_is_retried_before_anything_else_is_applied() -> None:
    seen: list[dict[int, int]] = []
    rewinds: list[str] = []

    async def apply(batch: PreparedBatch, now_ms: int) -> Applied:
        seen.append(dict(batch.starts))
        return Applied.REWIND if len(seen) == 1 else Applied.APPLIED

    async def rewind() -> dict[int, int]:
        rewinds.append("try")
        if len(rewinds) == 1:
            raise CacheUnavailableError("redis restarting")
        return {0: 0}

    consumer = FakeConsumer(
        deque(
            [
                {TP(TOPIC, 0): records(0, 4)},
                {TP(TOPIC, 0): records(0, 5)},  # prefetched: dropped
                {TP(TOPIC, 0): records(0, 0, 1)},
            ]
        )
    )
    drain = BatchDrain(TOPIC, prepare, apply, asyncio.Event(), rewind=rewind)
    drain.expect({0: 4})
    run(drain, consumer)
    assert ["try", "try"] == rewinds
    assert [{0: 4}, {0: 0}] == seen
