"""The worker's drain loop: fetches become batches, applied in order, acknowledged after."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.errors import CacheUnavailableError
from workers.drain import Applied, BatchDrain
from workers.handlers import PreparedBatch, RawRecord, Record


@dataclass
class ScriptedFetches:
    """The drain's view of the consumer (``workers.drain.Fetches``, a protocol of ours; the
    faust side of it is tested against faust's real classes in test_faust_internals.py):
    fetches served from a queue, then the consumer stops."""

    fetches: deque[dict[int, list[RawRecord]]]
    commits: list[dict[int, int]] = field(default_factory=list)
    inbound: list[int] = field(default_factory=list)
    _stopped: bool = False

    def stopped(self) -> bool:
        return self._stopped

    async def next_records(self, timeout: float) -> dict[int, list[RawRecord]]:
        await asyncio.sleep(0)
        if not self.fetches:
            self._stopped = True
            return {}
        return self.fetches.popleft()

    def assigned(self) -> set[int]:
        return {0, 1}

    def partition_count(self) -> int:
        return 2

    async def commit(self, offsets: Mapping[int, int]) -> None:
        self.commits.append(dict(offsets))

    def mark_inbound(self, partitions: Sequence[int]) -> None:
        self.inbound.extend(partitions)


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


def run(drain: BatchDrain, fetches: ScriptedFetches) -> None:
    asyncio.run(drain.run(fetches))


def test_fetches_are_applied_in_order_and_committed_only_once_applied() -> None:
    applied: list[dict[int, int]] = []

    async def apply(batch: PreparedBatch, now_ms: int) -> Applied:
        await asyncio.sleep(0.001)
        applied.append(dict(batch.next_offsets))
        return Applied.APPLIED

    fetches = ScriptedFetches(
        deque(
            [
                {0: records(0, 0, 1)},
                {1: records(1, 0), 0: records(0, 2)},
                {0: records(0, 3, 4)},
            ]
        )
    )
    drain = BatchDrain(prepare, apply, asyncio.Event())
    run(drain, fetches)
    assert applied == [{0: 2}, {1: 1, 0: 3}, {0: 5}]
    assert drain.batches == 3
    assert sorted(set(fetches.inbound)) == [0, 1]  # faust's stall detector fed per batch
    # the last commit (at the end of the loop) holds exactly what Redis applied
    assert fetches.commits[-1] == {0: 5, 1: 1}


def test_an_unavailable_cache_is_retried_and_a_lost_one_stops_the_drain() -> None:
    calls: list[str] = []
    stopped = asyncio.Event()

    async def apply(batch: PreparedBatch, now_ms: int) -> Applied:
        calls.append("try")
        if len(calls) == 1:
            raise CacheUnavailableError("redis down")
        stopped.set()
        return Applied.STOP  # the cache was lost: the worker rebuilds

    fetches = ScriptedFetches(deque([{0: records(0, 0)}, {0: records(0, 1)}]))
    drain = BatchDrain(prepare, apply, stopped)
    run(drain, fetches)
    assert calls == ["try", "try"]
    assert fetches.commits == []  # nothing acknowledged from a lost cache


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

    fetches = ScriptedFetches(
        deque(
            [
                {0: records(0, 0)},
                {0: records(0, 5, 6)},
                {0: records(0, 7)},  # prefetched behind the refused batch: dropped
                {0: records(0, 1, 2)},  # read again from the cache's offset
            ]
        )
    )
    drain = BatchDrain(prepare, apply, asyncio.Event(), rewind=rewind)
    drain.expect({0: 0})
    run(drain, fetches)
    assert [({0: 0}, 2), ({0: 1}, 2), ({0: 1}, 2)] == seen
    assert ["rewind"] == rewinds
    assert fetches.commits[-1] == {0: 3}


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

    fetches = ScriptedFetches(
        deque(
            [
                {0: records(0, 4)},
                {0: records(0, 5)},  # prefetched: dropped
                {0: records(0, 0, 1)},
            ]
        )
    )
    drain = BatchDrain(prepare, apply, asyncio.Event(), rewind=rewind)
    drain.expect({0: 4})
    run(drain, fetches)
    assert ["try", "try"] == rewinds
    assert [{0: 4}, {0: 0}] == seen
