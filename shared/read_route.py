"""Which of a region's servers a validator asks: its read server (a replica, or the
primary), and the primary when the read server does not answer.

After a failure of the read server the primary is asked first for ``retry_after_s``, so
that a dead replica costs one failed call, not one per request; then the read server is
tried again. The primary is always at least as fresh as a replica, so falling back to it
never weakens an answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["ReadRoute", "route_of"]

C = TypeVar("C")


@dataclass
class ReadRoute(Generic[C]):
    """The read client and the primary client to fall back to (None: no fallback)."""

    read: C
    primary: C | None = None
    retry_after_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _read_down_until: float = field(default=0.0, repr=False)

    def order(self) -> tuple[C, ...]:
        """The clients to try, in order."""
        if self.primary is None:
            return (self.read,)
        if self.clock() < self._read_down_until:
            return (self.primary, self.read)
        return (self.read, self.primary)

    def failed(self, client: C) -> None:
        """``client`` did not answer."""
        if client is self.read and self.primary is not None:
            self._read_down_until = self.clock() + self.retry_after_s


def route_of(holder: dict[str, object], read: C, primary: C | None) -> ReadRoute[C]:
    """The route kept in ``holder`` (a validator's ``__dict__``) for these clients; a new one
    when the validator's clients changed."""
    route = holder.get("_read_route")
    if not isinstance(route, ReadRoute) or route.read is not read or route.primary is not primary:
        route = holder["_read_route"] = ReadRoute(read, primary)
    return route
