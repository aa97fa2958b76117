"""The gate's metrics: counters and a latency histogram in memory shared by its workers.

Each worker process writes only its own row of an anonymous shared mapping made
before the fork, so no locks are needed; ``/metrics`` on any worker sums the rows
and renders Prometheus' text format (requests by route and outcome, latency).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

__all__ = ["OUTCOMES", "ROUTES", "GateMetrics"]

ROUTES = ("auth", "introspect", "healthz", "metrics", "other")
OUTCOMES = (
    "valid",
    "invalid",
    "forbidden",
    "unavailable",
    "unauthenticated",
    "csrf_mismatch",
    "bad_request",
    "invalid_client",
    "active",
    "inactive",
    "ok",
    "not_found",
    "server_error",
)
BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_COUNTERS = len(ROUTES) * len(OUTCOMES)
# per route: one slot per bucket, +Inf, and the sum in microseconds
_HIST = len(ROUTES) * (len(BUCKETS_S) + 2)
_ROW = _COUNTERS + _HIST
_ROUTE_INDEX = {r: i for i, r in enumerate(ROUTES)}
_OUTCOME_INDEX = {o: i for i, o in enumerate(OUTCOMES)}


@dataclass
class GateMetrics:
    """Counters for ``workers`` processes; ``worker`` selects the row this process writes."""

    workers: int = 1
    worker: int = 0
    _buffer: mmap.mmap = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # An anonymous mapping is MAP_SHARED: forked workers and the parent see one memory.
        self._buffer = mmap.mmap(-1, 8 * _ROW * max(1, self.workers))
        self._cells = memoryview(self._buffer).cast("Q")

    def observe(self, route: str, outcome: str, seconds: float) -> None:
        """Count one request and its latency."""
        r = _ROUTE_INDEX.get(route, len(ROUTES) - 1)
        base = self.worker * _ROW
        cells = self._cells
        cells[base + r * len(OUTCOMES) + _OUTCOME_INDEX.get(outcome, 0)] += 1
        h = base + _COUNTERS + r * (len(BUCKETS_S) + 2)
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                cells[h + i] += 1
                break
        else:
            cells[h + len(BUCKETS_S)] += 1
        cells[h + len(BUCKETS_S) + 1] += int(seconds * 1_000_000)

    def _summed(self) -> list[int]:
        total = [0] * _ROW
        for w in range(max(1, self.workers)):
            row = self._cells[w * _ROW : (w + 1) * _ROW]
            for i, value in enumerate(row):
                total[i] += value
        return total

    def count(self, route: str, outcome: str) -> int:
        """Requests of ``route`` answered with ``outcome``, over every worker."""
        return self._summed()[_ROUTE_INDEX[route] * len(OUTCOMES) + _OUTCOME_INDEX[outcome]]

    def render(self, region: str) -> bytes:
        """Prometheus text exposition of every worker's counts."""
        cells = self._summed()
        label = region.replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            "# HELP tokensync_gate_requests_total Gate requests by route and outcome.",
            "# TYPE tokensync_gate_requests_total counter",
        ]
        for r, route in enumerate(ROUTES):
            for o, outcome in enumerate(OUTCOMES):
                value = cells[r * len(OUTCOMES) + o]
                if value:
                    lines.append(
                        f'tokensync_gate_requests_total{{region="{label}",route="{route}",'
                        f'outcome="{outcome}"}} {value}'
                    )
        lines += [
            "# HELP tokensync_gate_request_seconds Time from a request's last byte to its answer.",
            "# TYPE tokensync_gate_request_seconds histogram",
        ]
        for r, route in enumerate(ROUTES):
            h = _COUNTERS + r * (len(BUCKETS_S) + 2)
            running = 0
            labels = f'region="{label}",route="{route}"'
            for i, bound in enumerate(BUCKETS_S):
                running += cells[h + i]
                lines.append(
                    f'tokensync_gate_request_seconds_bucket{{{labels},le="{bound}"}} {running}'
                )
            running += cells[h + len(BUCKETS_S)]
            lines.append(f'tokensync_gate_request_seconds_bucket{{{labels},le="+Inf"}} {running}')
            lines.append(f"tokensync_gate_request_seconds_count{{{labels}}} {running}")
            seconds = cells[h + len(BUCKETS_S) + 1] / 1_000_000
            lines.append(f"tokensync_gate_request_seconds_sum{{{labels}}} {seconds:.6f}")
        return ("\n".join(lines) + "\n").encode()
