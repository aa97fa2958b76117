"""Reading the token topic a whole fetch at a time, instead of faust's record-at-a-time path.

faust hands every record to its conductor, a channel queue and a stream before an
agent sees it: about 100 µs a record, so a region could not load more than ~8k
records/s. The worker keeps faust for what it does well (group membership and
rebalances, the seek hook, timers, producing) and replaces the consumer's drain loop
with this one (``workers.internals`` installs it and is its only way to faust's consumer,
through the small ``Fetches`` protocol):

- each fetch (up to ``broker_max_poll_records`` records) becomes one verified batch
  and one Lua call;
- while Redis applies batch N, batch N+1 is fetched and verified, so Python and
  Redis work at the same time (batches are still applied one after another, in order);
- a batch is acknowledged only once Redis applied it: Kafka's committed offsets follow
  the applied batches about once a second (the worker resumes from the offsets in Redis
  anyway; the commit keeps the group's lag visible to Kafka tools);
- each batch states, per partition, the offset the consumer read it from (where the
  worker positioned it, then where the previous batch ended); the cache refuses a batch
  that starts past the offset it recorded (it went back in time: a restore, a lagging
  replica), and the drain then drops what it prefetched and rewinds to the cache's offsets.

The agent still subscribes the topic; no record reaches it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from enum import Enum
from typing import Protocol

from shared.errors import CacheUnavailableError
from shared.logs import get_logger
from workers.handlers import PreparedBatch, Record

__all__ = ["Applied", "BatchDrain", "Fetches"]

log = get_logger(__name__)

COMMIT_INTERVAL_S = 1.0
MAX_BACKOFF_S = 2.0


class Applied(Enum):
    """What became of a batch handed to Redis."""

    APPLIED = "applied"
    STOP = "stop"  # the cache was lost: the worker stops and rebuilds
    REWIND = "rewind"  # the cache went back in time: nothing applied, read again from it


class Fetches(Protocol):
    """The token topic as the drain reads it from the consumer (``internals.FaustFetches``)."""

    def stopped(self) -> bool:
        """The consumer is stopping: the drain returns."""
        ...

    async def next_records(self, timeout: float) -> Mapping[int, Sequence[Record]]:
        """The next fetch of the topic, by partition (empty after ``timeout`` seconds)."""
        ...

    def assigned(self) -> Set[int]:
        """The topic's partitions assigned to this consumer."""
        ...

    def partition_count(self) -> int:
        """The topic's partition count (0: not known yet)."""
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit these next offsets for the group."""
        ...

    def mark_inbound(self, partitions: Sequence[int]) -> None:
        """Records of these partitions were just processed (faust's stall detector)."""
        ...


class BatchDrain:
    """The drain loop of one worker: ``run(fetches)`` until the consumer stops."""

    def __init__(
        self,
        prepare: Callable[[Sequence[Record]], PreparedBatch],
        apply: Callable[[PreparedBatch, int], Awaitable[Applied]],
        stopped: asyncio.Event,
        rewind: Callable[[], Awaitable[Mapping[int, int]]] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        """``prepare`` verifies a fetch; ``apply`` writes it; ``rewind`` positions the
        consumer at the cache's offsets and returns them; ``idle`` says whether an empty
        fetch is prepared all the same (records waiting for a seal may be due)."""
        self._idle = idle
        self._prepare = prepare
        self._apply = apply
        self._stopped = stopped
        self._rewind = rewind
        self._next_offsets: dict[int, int] = {}
        self._positions: dict[int, int] = {}  # where the consumer reads each partition next
        self._committed_at = 0.0
        self.batches = 0

    def expect(self, positions: Mapping[int, int]) -> None:
        """Where the consumer was positioned (by the worker's seek): the next batch of each
        partition states it as its start."""
        self._positions.update(positions)

    def _stamp(self, batch: PreparedBatch, fetches: Fetches) -> None:
        """State where each partition of ``batch`` was read from, and the partition count."""
        positions = self._positions
        for partition, next_offset in batch.next_offsets.items():
            start = positions.get(partition)
            if start is not None:
                batch.starts[partition] = start
            if start is None or next_offset > start:
                positions[partition] = next_offset
        batch.partition_count = fetches.partition_count()

    async def _settle(self, pending: asyncio.Task[Applied] | None) -> Applied:
        """Wait for the batch in flight; on a rewind, reposition before going on."""
        if pending is None:
            return Applied.APPLIED
        outcome = await pending
        if outcome is Applied.REWIND and self._rewind is not None:
            positions = await self._rewind_until_done()
            self._positions.clear()
            self._positions.update(positions)
            self._next_offsets.update(positions)  # commit no more than the cache holds
        return outcome

    async def _rewind_until_done(self) -> Mapping[int, int]:
        """Rewind, retried (like a batch) while Redis or the consumer does not answer."""
        assert self._rewind is not None
        backoff = 0.05
        while True:
            try:
                return await self._rewind()
            except Exception as e:  # a loop boundary: nothing moves on until it succeeds
                if self._stopped.is_set():
                    raise
                log.error("rewind_failed", error=str(e), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def run(self, fetches: Fetches) -> None:
        """Read, verify and apply fetches until the consumer or the worker stops."""
        pending: asyncio.Task[Applied] | None = None
        try:
            while not (fetches.stopped() or self._stopped.is_set()):
                records = await fetches.next_records(1.0)
                if fetches.stopped():
                    break
                raw = [r for partition in sorted(records) for r in records[partition]]
                if not raw and not (self._idle is not None and self._idle()):
                    outcome, pending = await self._settle(pending), None
                    if outcome is Applied.STOP:
                        return
                    await self._commit(fetches, force=False)
                    continue
                batch = self._prepare(raw)  # CPU work, while Redis applies the previous batch
                self._stamp(batch, fetches)
                outcome, pending = await self._settle(pending), None
                if outcome is Applied.STOP:
                    return
                if outcome is Applied.REWIND:
                    continue  # read after the previous one's refused start: dropped
                pending = asyncio.ensure_future(self._apply_with_retry(batch, fetches))
                # let the task send its command before this loop goes back to CPU work
                for _ in range(3):
                    await asyncio.sleep(0)
                await self._commit(fetches, force=False)
            if await self._settle(pending) is Applied.STOP:
                pending = None
                return
            pending = None
            await self._commit(fetches, force=True)  # what was applied, before leaving
        finally:
            if pending is not None and not pending.done():
                pending.cancel()

    async def _apply_with_retry(self, batch: PreparedBatch, fetches: Fetches) -> Applied:
        backoff = 0.05
        while not self._stopped.is_set():
            try:
                outcome = await self._apply(batch, int(time.time() * 1000))
            except CacheUnavailableError as e:
                # Nothing recorded as applied: retried until Redis answers again.
                log.error("batch_failed", error=str(e), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self.batches += 1
            if outcome is Applied.APPLIED:  # acknowledged (committed) only once applied
                self._track(batch.next_offsets, fetches)
            return outcome
        return Applied.STOP

    def _track(self, next_offsets: Mapping[int, int], fetches: Fetches) -> None:
        for partition, offset in next_offsets.items():
            self._next_offsets[partition] = max(self._next_offsets.get(partition, 0), offset)
        fetches.mark_inbound(list(next_offsets))

    async def _commit(self, fetches: Fetches, *, force: bool) -> None:
        """Commit, about once a second, the offsets of the batches Redis applied."""
        now = time.monotonic()
        if not self._next_offsets or (not force and now - self._committed_at < COMMIT_INTERVAL_S):
            return
        self._committed_at = now
        assigned = fetches.assigned()
        offsets = {p: o for p, o in self._next_offsets.items() if p in assigned}
        if offsets:
            try:
                await fetches.commit(offsets)
            except Exception as e:  # a failed commit only delays the lag the group shows
                log.warning("offset_commit_failed", error=str(e))
