"""Bootstrap progress of a region: a progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from shared.logs import get_logger
from shared.region_state import RegionState, read_region_state_async
from workers.cache import RegionCache

__all__ = ["BootstrapProgress", "eta_s"]

log = get_logger(__name__)


def eta_s(loaded: int, total: int, rate: float) -> float | None:
    """Seconds left at ``rate`` records/s, or None if unknown."""
    if rate <= 0 or total <= loaded:
        return None if total > loaded else 0.0
    return (total - loaded) / rate


class BootstrapProgress:
    """Watches the region's meta until it is ready, reporting loaded / total, rate and ETA."""

    def __init__(self, region: str, cache: RegionCache, interval_s: float = 1.0) -> None:
        self.region = region
        self.cache = cache
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background of the worker's loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the watcher."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _snapshot(self) -> RegionState:
        return await read_region_state_async(self.cache.client, self.cache.keys, self.region)

    async def _run(self) -> None:
        started = time.monotonic()
        first_loaded: int | None = None
        bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            bar = Progress(transient=False)
            bar.start()
            task = bar.add_task(f"bootstrap {self.region}", total=None)
        try:
            while True:
                state = await self._snapshot()
                if first_loaded is None:
                    first_loaded = state.bootstrap_loaded
                elapsed = max(time.monotonic() - started, 1e-3)
                rate = (state.bootstrap_loaded - first_loaded) / elapsed
                if bar is not None:
                    bar.update(
                        task, completed=state.bootstrap_loaded, total=state.bootstrap_total or None
                    )
                if state.ready:
                    log.info(
                        "region_ready",
                        region=self.region,
                        loaded=state.bootstrap_loaded,
                        seconds=round(elapsed, 2),
                    )
                    return
                eta = eta_s(state.bootstrap_loaded, state.bootstrap_total, rate)
                log.info(
                    "bootstrap_progress",
                    region=self.region,
                    loaded=state.bootstrap_loaded,
                    total=state.bootstrap_total,
                    rate=round(rate),
                    eta_s=None if eta is None else round(eta, 1),
                )
                await asyncio.sleep(self.interval_s)
        except Exception:  # a watcher must never take the worker down
            log.warning("bootstrap_progress_failed", exc_info=True)
        finally:
            if bar is not None:
                bar.stop()
