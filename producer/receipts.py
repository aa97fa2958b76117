"""Receipts: per region, when it had applied everything a given outbox seq depends on.

A receipt is read from what regions applied, never from what was sent. The
relay recorded where the broker put the record (partition and offset). A
region has enforced seq S (committed at R) once it has applied S's own record
*and* every partition carries a heartbeat stamped after R: a heartbeat stamped
T certifies that every change committed before T was published, so whatever
else could change the answer (a token's own record, which lives in another
partition than an epoch) is applied there too. A region whose dead letters hold
S, or an unreadable record at or before S's offset in its partition, never
counts. Regions are asked concurrently; a wait never runs past its deadline,
however many Redis servers hang. Elapsed times count from the commit.

Longer than 350 lines: one concept, a receipt, from the seq's position to each region's
verdict (its primary, its near-caches and every listed read replica).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from producer.records import OutboxPosition
from producer.store import TokenStore
from shared import tracing
from shared.errors import UsageError
from shared.keys import RedisKeys
from shared.nearcache import near_caches_behind, sync_near_caches
from shared.region_state import DeadLetters, RegionState, read_region_state
from shared.region_url import endpoint_of
from shared.settings import Region, Settings

__all__ = [
    "MAX_WAIT_S",
    "Receipt",
    "RegionOutcome",
    "RegionReceipt",
    "all_regions",
    "receipt_timeout",
    "wait_for_receipt",
]

MAX_WAIT_S = 60.0
"""The longest a receipt wait may block (an API thread is held that long at most)."""

_CALL_TIMEOUT_S = 1.0  # one Redis call; the wait itself ends at its deadline regardless
_MIN_CALL_TIMEOUT_S = 0.25  # what a zero wait grants each region for its one answer


class RegionOutcome(StrEnum):
    """Where one region stands on a seq."""

    ENFORCED = "enforced"  # applied the record and everything committed before it
    PENDING = "pending"  # answered, but has not (yet) applied all of it
    UNREACHABLE = "unreachable"  # its Redis did not answer (refused, failed or hung)
    DEAD_LETTERED = "dead_lettered"  # the record (or an unreadable one before it) was refused
    UNPUBLISHED = "unpublished"  # the relay had not published the seq before the deadline


@dataclass(frozen=True)
class RegionReceipt:
    """One region's answer: enforced after ``after_ms`` since commit, or not, with why."""

    region: str
    state: RegionOutcome
    after_ms: float | None = None
    detail: str | None = None

    @property
    def enforced(self) -> bool:
        """Whether this region enforces the seq."""
        return self.state is RegionOutcome.ENFORCED

    @property
    def error(self) -> str | None:
        """Why it is not enforced (None when it is)."""
        if self.enforced:
            return None
        return f"{self.state.value}: {self.detail}" if self.detail else self.state.value


@dataclass(frozen=True)
class Receipt:
    """Where seq ``seq`` stands in every region."""

    seq: int
    partition: int | None
    offset: int | None
    regions: tuple[RegionReceipt, ...]
    timeout_s: float

    @property
    def complete(self) -> bool:
        """Every region enforced it."""
        return bool(self.regions) and all(r.enforced for r in self.regions)

    def summary(self) -> str:
        """One line for people: 'enforced in 3/3 regions, slowest us after 38 ms'."""
        done = [r for r in self.regions if r.enforced]
        head = f"enforced in {len(done)}/{len(self.regions)} regions"
        if self.partition is None:
            return f"{head}: the relay did not publish seq {self.seq} within {self.timeout_s:g} s"
        if done:
            slowest = max(done, key=lambda r: r.after_ms or 0.0)
            head += f", slowest {slowest.region} after {slowest.after_ms or 0:.0f} ms"
        missing = [r for r in self.regions if not r.enforced]
        if missing:
            names = ", ".join(f"{r.region} ({r.error})" for r in missing)
            head += f"; not enforced: {names}"
            if any(r.state is not RegionOutcome.DEAD_LETTERED for r in missing):
                head += f" (waited up to {self.timeout_s:g} s)"
        return head

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "partition": self.partition,
            "offset": self.offset,
            "complete": self.complete,
            "timeout_s": self.timeout_s,
            "summary": self.summary(),
            "regions": [
                {
                    "region": r.region,
                    "state": r.state.value,
                    "enforced": r.enforced,
                    "after_ms": r.after_ms,
                    "error": r.error,
                }
                for r in self.regions
            ],
        }


def all_regions(settings: Settings, store: TokenStore) -> list[Region]:
    """Regions from the settings and those registered in the store (settings win on names)."""
    named = {r.name: r for r in store.regions()}
    named.update({r.name: r for r in settings.regions})
    return [named[n] for n in sorted(named)]


def receipt_timeout(timeout_s: float) -> float:
    """``timeout_s`` clamped to [0, MAX_WAIT_S]; NaN and infinities are a UsageError.

    Callers that mutate before waiting can call this first to refuse bad input up front.
    """
    if not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s):
        raise UsageError(f"a receipt timeout must be a finite number of seconds, not {timeout_s}")
    return min(max(float(timeout_s), 0.0), MAX_WAIT_S)


def _judge(position: OutboxPosition, state: RegionState) -> tuple[RegionOutcome, str | None]:
    """Enforced once the seq's record is applied and, for an epoch, every partition is
    certified past its commit (a heartbeat stamped after ``recorded_at_ms``).

    Whether an epoch hits a token depends on the token's own record, in another
    partition. A token record is the whole answer about its token (every record about
    one token lives in one partition, in order; other records only deny more), so it
    needs only itself: single-token receipts stay as fast as one apply."""
    assert position.partition is not None and position.offset is not None
    if not state.has_applied(position.partition, position.offset):
        return RegionOutcome.PENDING, (
            f"has not applied partition {position.partition} offset {position.offset}"
        )
    if position.kind != "epoch":
        return RegionOutcome.ENFORCED, None
    count = max([state.partition_count, position.partition + 1, *(p + 1 for p in state.partitions)])
    for p in range(count):
        part = state.partitions.get(p)
        beat = None if part is None else part.heartbeat_ms
        if beat is None or beat <= position.recorded_at_ms:
            return RegionOutcome.PENDING, (
                f"partition {p} not yet certified past the commit (no heartbeat after it)"
            )
    return RegionOutcome.ENFORCED, None


def _dead_lettered(position: OutboxPosition, letters: DeadLetters) -> str | None:
    """Why the region's dead letters block this seq, or None."""
    if letters.exact:
        return f"seq {position.seq} is in its dead letters ({letters.exact[0]})"
    for partition, offset in letters.unreadable:
        if (
            partition == position.partition
            and position.offset is not None
            and offset <= position.offset
        ):
            return f"an unreadable record at {partition}:{offset} is in its dead letters"
    return None


class _Watcher:
    """Polls one region in a thread of its own until it is final or the deadline passed."""

    def __init__(
        self,
        region: Region,
        keys: RedisKeys,
        position: OutboxPosition,
        *,
        deadline: float,
        poll_s: float,
        call_timeout_s: float,
    ) -> None:
        self.region = region
        self._keys = keys
        self._position = position
        self._deadline = deadline  # monotonic
        self._poll_s = poll_s
        self._call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        self._answer = RegionReceipt(region.name, RegionOutcome.UNREACHABLE, detail="no answer")
        self._near_since: int | None = None  # Redis time of the near-cache sync, once applied
        self._replicas_pending = list(region.replicas)  # validators may read these too
        self._replica_clients: dict[str, redis.Redis] = {}
        self.thread = threading.Thread(target=self._run, name=f"receipt-{region.name}", daemon=True)

    @property
    def answer(self) -> RegionReceipt:
        with self._lock:
            return self._answer

    def _set(self, answer: RegionReceipt) -> None:
        with self._lock:
            self._answer = answer

    def _run_once(self, client: redis.Redis) -> RegionReceipt:
        position, name = self._position, self.region.name
        region = read_region_state(client, self._keys, name, dead_letters_of=position.seq)
        if not region.reachable or region.dead_letters is None:
            return RegionReceipt(name, RegionOutcome.UNREACHABLE, detail=str(region.error)[:200])
        reason = _dead_lettered(position, region.dead_letters)
        if reason is not None:
            return RegionReceipt(name, RegionOutcome.DEAD_LETTERED, detail=reason)
        state, detail = _judge(position, region)
        if state is RegionOutcome.ENFORCED:
            state, detail = self._near_caches(client)
        if state is RegionOutcome.ENFORCED:
            state, detail = self._replicas_applied()
        if state is RegionOutcome.ENFORCED:
            elapsed = time.time() * 1000 - position.recorded_at_ms
            return RegionReceipt(name, state, round(max(elapsed, 0.0), 1))
        return RegionReceipt(name, state, detail=detail)

    def _near_caches(self, client: redis.Redis) -> tuple[RegionOutcome, str | None]:
        """Once Redis applied the seq, the region's near-caches must have processed it too
        (or their answer bound passed): "enforced" covers every validator of the region.
        The sync ping is taken after the applied check, so it follows the apply."""
        if self._near_since is None:
            self._near_since = sync_near_caches(client, self._keys)
        behind = near_caches_behind(client, self._keys, self._near_since)
        if behind:
            return RegionOutcome.PENDING, f"near-caches pending: {', '.join(behind[:5])}"
        return RegionOutcome.ENFORCED, None

    def _replicas_applied(self) -> tuple[RegionOutcome, str | None]:
        """Validators may read any replica of the region: each must hold the seq too (an
        unreachable one may still answer someone: pending)."""
        while self._replicas_pending:
            url = self._replicas_pending[0]
            client = self._replica_clients.get(url) or redis.Redis.from_url(
                url,
                socket_timeout=self._call_timeout_s,
                socket_connect_timeout=self._call_timeout_s,
            )
            self._replica_clients[url] = client
            state = read_region_state(client, self._keys, self.region.name)
            if not state.reachable:
                return RegionOutcome.PENDING, f"replica {endpoint_of(url)} does not answer"
            if _judge(self._position, state)[0] is not RegionOutcome.ENFORCED:
                return RegionOutcome.PENDING, f"replica {endpoint_of(url)} has not applied it"
            self._replicas_pending.pop(0)
        return RegionOutcome.ENFORCED, None

    def _run(self) -> None:
        """Poll until final or the deadline; at least one answer is sought."""
        client: redis.Redis | None = None
        try:
            while True:
                try:
                    if client is None:
                        client = redis.Redis.from_url(
                            self.region.redis_url,
                            socket_timeout=self._call_timeout_s,
                            socket_connect_timeout=self._call_timeout_s,
                        )
                    answer = self._run_once(client)
                except (redis.RedisError, OSError, ValueError) as e:
                    answer = RegionReceipt(
                        self.region.name, RegionOutcome.UNREACHABLE, detail=str(e)[:200]
                    )
                self._set(answer)
                final = answer.state in (RegionOutcome.ENFORCED, RegionOutcome.DEAD_LETTERED)
                if final or time.monotonic() + self._poll_s >= self._deadline:
                    return
                time.sleep(self._poll_s)
        finally:
            if client is not None:
                client.close()
            for replica in self._replica_clients.values():
                replica.close()


def _published(store: TokenStore, seq: int, deadline: float, poll_s: float) -> OutboxPosition:
    position = store.position(seq)
    while position.offset is None and time.monotonic() < deadline:
        time.sleep(poll_s)
        position = store.position(seq)
    return position


def wait_for_receipt(
    settings: Settings,
    store: TokenStore,
    seq: int,
    *,
    regions: Sequence[Region] | None = None,
    timeout_s: float = 10.0,
    poll_s: float = 0.002,
) -> Receipt:
    """Block until every region enforces ``seq`` (or is final) or ``timeout_s`` passed.

    ``timeout_s`` is clamped to [0, 60]; NaN or an infinity is a UsageError, and so is a
    ``seq`` no 64-bit integer holds. Regions are
    polled concurrently, so a hung Redis costs no time past the deadline; it is reported
    as unreachable.
    """
    if not -(2**63) <= seq < 2**63:
        raise UsageError(f"seq {seq} is out of range: outbox seqs are 64-bit integers")
    timeout_s = receipt_timeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    targets = list(regions) if regions is not None else all_regions(settings, store)
    position = _published(store, seq, deadline, max(poll_s, 0.002))
    if position.partition is None or position.offset is None:
        unpublished = tuple(
            RegionReceipt(
                r.name, RegionOutcome.UNPUBLISHED, detail="the relay has not published it"
            )
            for r in targets
        )
        return Receipt(seq, None, None, unpublished, timeout_s)
    keys = RedisKeys(settings.redis_namespace)
    # One Redis call may take this long; a short wait still gets one answer per region.
    call_timeout = min(_CALL_TIMEOUT_S, max(deadline - time.monotonic(), _MIN_CALL_TIMEOUT_S))
    watchers = [
        _Watcher(r, keys, position, deadline=deadline, poll_s=poll_s, call_timeout_s=call_timeout)
        for r in targets
    ]
    for watcher in watchers:
        watcher.thread.start()
    last = max(deadline, time.monotonic() + call_timeout)
    for watcher in watchers:
        watcher.thread.join(max(last - time.monotonic(), 0.0))
    # A watcher still inside a Redis call (a hung server) ends on its own within its socket
    # timeout; its region counts as unreachable.
    answers = tuple(w.answer for w in watchers)
    tracing.receipt(seq, [(a.region, a.state.value, a.after_ms) for a in answers])
    return Receipt(seq, position.partition, position.offset, answers, timeout_s)
