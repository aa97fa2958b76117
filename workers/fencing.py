"""Relay fencing on the worker's side: which epoch is in force at each offset of a partition.

A relay holding the relay lease stamps its fencing epoch into every record
(``shared.events.fence_of``). Once a partition holds a record of epoch E at offset O,
a record of an epoch below E after O was sent by a relay that had lost the lease (it was
paused, then resumed): it is refused (dead-lettered with reason ``fenced``). Nothing is
lost by that: the old relay never marks such rows published (``producer.relay_lease``),
so the lease holder publishes them again.

The epochs are kept by offset, not as one maximum, so a partition read again from an
earlier offset (a rewind, a cache rebuilt from 0) accepts the older epoch's records that
came before the take-over. They live in the worker's memory, rebuilt from the stream as
it is read: after a restart the worker knows the epochs from where it resumes on. That is
enough because the region's Redis refuses older versions on its own (a token keeps its
highest seq, epochs and heartbeats only move forward); fencing adds that a fenced relay's
records are seen, counted and dead-lettered instead of mixing silently into the stream.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["FenceLog"]

#: take-overs remembered per partition (older ones matter only to a rewind that far back)
MAX_MARKS = 64


@dataclass
class FenceLog:
    """Per partition, the offsets where a higher fencing epoch first appeared."""

    _marks: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def admit(self, partition: int, offset: int, epoch: int | None) -> int | None:
        """Record a record's epoch; None if it may be applied, else the epoch in force
        at ``offset`` that fences it. Records without an epoch are always admitted."""
        if epoch is None:
            return None
        marks = self._marks.setdefault(partition, [])
        at = bisect.bisect_right(marks, (offset, float("inf")))
        in_force = marks[at - 1][1] if at else None
        if in_force is not None and epoch < in_force:
            return in_force
        if in_force is None or epoch > in_force:
            later = [m for m in marks[at:] if m[1] > epoch]
            marks[at:] = [(offset, epoch), *later]
            if len(marks) > MAX_MARKS:
                del marks[: len(marks) - MAX_MARKS]
        return None

    def epoch(self, partition: int) -> int | None:
        """The highest fencing epoch seen in ``partition`` (None: none seen)."""
        marks = self._marks.get(partition)
        return max(e for _, e in marks) if marks else None
