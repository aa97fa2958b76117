"""Where region workers run: what ``region add`` and ``region remove`` need from a host.

The local stack (package ``stack``, extra ``[stack]``) implements ``WorkerHost`` and registers
its factory under the ``tokensync.regions`` entry point group, so that the producer never
imports the launcher. Without it (a production deployment) there is no host: ``region add``
registers the region and tells the operator to start its worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from shared.settings import Region

__all__ = ["ENTRY_POINT_GROUP", "WorkerHost", "worker_host"]

ENTRY_POINT_GROUP = "tokensync.regions"


class WorkerHost(Protocol):
    """Something that starts and stops region workers in this working directory."""

    def running(self) -> bool:
        """Whether the host runs here now (it can start workers)."""
        ...

    def worker_alive(self, region: str) -> bool:
        """Whether the host runs a live worker for ``region``."""
        ...

    def add_worker(self, region: Region) -> object:
        """Start ``region``'s worker and remember the region."""
        ...

    def remove_worker(self, region: str) -> bool:
        """Stop ``region``'s worker if the host runs one; True if it stopped one."""
        ...


HostFactory = Callable[[Path, Mapping[str, str]], WorkerHost]


def worker_host(cwd: Path, environ: Mapping[str, str]) -> WorkerHost | None:
    """The first installed host registered under ``tokensync.regions``, or None.

    An entry point whose package cannot be imported counts as not installed.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory: HostFactory = ep.load()
        except ImportError:
            continue
        return factory(cwd, environ)
    return None
