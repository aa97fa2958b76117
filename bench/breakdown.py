"""``bench propagation --breakdown``: each revoke -> denied sample cut into its stages.

Stages (wall clock, one machine): the store call returned (commit) -> the relay woke for
the batch -> produced the record -> the broker acknowledged it -> region R's worker took
the fetch -> Redis answered the apply -> R's polling validator answered *invalid*. The
relay's stamps travel in the record's ``ts-stages`` header, the acknowledgement is kept
by the relay in this process, the worker's stamps come from each region's debug hash
(``shared.stages``; ``TOKENSYNC_STAGE_TIMING`` is on for this run only).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import sqlalchemy as sa

from bench.report import summary, table
from shared.keys import RedisKeys
from shared.stages import RecordStages, parse_stages

__all__ = ["STAGES", "Sample", "collect", "plot", "print_table", "split"]

STAGES = (
    "commit -> relay awake",
    "relay awake -> produced",
    "produced -> acknowledged",
    "acknowledged -> fetched",
    "fetched -> applied",
    "applied -> denied",
)


@dataclass
class Sample:
    """One revocation: its seq, when the store call returned, when each region denied."""

    kind: str
    seq: int
    committed_us: int
    denied_us: dict[str, int] = field(default_factory=dict)


def collect(redis_url: str, keys: RedisKeys) -> dict[int, RecordStages]:
    """The stage stamps a region's worker wrote (seq -> stamps)."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw: Mapping[bytes, bytes] = client.hgetall(keys.stages)  # type: ignore[assignment]
    finally:
        client.close()
    found = {}
    for name, value in raw.items():
        stamps = parse_stages(int(name), value)
        if stamps is not None:
            found[stamps.seq] = stamps
    return found


def _stages_ms(sample: Sample, region: str, stamps: RecordStages, acked_us: int) -> list[float]:
    points = [
        sample.committed_us,
        stamps.woke_us,
        stamps.produced_us,
        acked_us,
        stamps.fetched_us,
        stamps.applied_us,
        sample.denied_us[region],
    ]
    return [(b - a) / 1000 for a, b in itertools.pairwise(points)]


def split(
    samples: Sequence[Sample],
    stamps: Mapping[str, Mapping[int, RecordStages]],
    acked_at_us: Callable[[int], int | None],
) -> tuple[dict[str, dict[str, list[float]]], int]:
    """Per region, per stage, the milliseconds of every complete sample; and how many
    (sample, region) pairs lacked a stamp (left out)."""
    per: dict[str, dict[str, list[float]]] = {r: {s: [] for s in STAGES} for r in stamps}
    incomplete = 0
    for sample in samples:
        acked = acked_at_us(sample.seq)
        for region, by_seq in stamps.items():
            found = by_seq.get(sample.seq)
            if acked is None or found is None or region not in sample.denied_us:
                incomplete += 1
                continue
            for stage, ms in zip(STAGES, _stages_ms(sample, region, found, acked), strict=True):
                per[region][stage].append(ms)
    return per, incomplete


def stats(per: Mapping[str, Mapping[str, list[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """p50/p90/p99/max/mean per region and stage."""
    return {
        region: {stage: summary(values) for stage, values in stages.items()}
        for region, stages in per.items()
    }


def print_table(summaries: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    """Per region, each stage's p50 and p99."""
    rows = [
        (region, stage, s.get("p50", 0.0), s.get("p99", 0.0), int(s.get("n", 0)))
        for region, stages in summaries.items()
        for stage, s in stages.items()
    ]
    print(table(rows, ["region", "stage", "p50 ms", "p99 ms", "samples"]))


def plot(summaries: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Any:
    """Stacked bars: per region, each stage's p50 (left) and p99 (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    regions = list(summaries)
    for ax, pct in zip(axes, ("p50", "p99"), strict=True):
        bottoms = [0.0] * len(regions)
        for stage in STAGES:
            # a stage can be slightly negative (the relay woke before the store call
            # returned): drawn as zero, kept as measured in the JSON
            heights = [max(0.0, summaries[r][stage].get(pct, 0.0)) for r in regions]
            ax.bar(regions, heights, bottom=bottoms, label=stage)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax.set_ylabel("ms")
        ax.set_title(f"{pct} of each stage")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("revoke -> denied, by stage (stacked per-stage percentiles)")
    return fig


def acked_in_store(engine: sa.Engine, seqs: Sequence[int]) -> dict[int, int]:
    """When the relay marked each seq published (µs; the store keeps milliseconds): the
    acknowledgement of a relay in another process."""
    found: dict[int, int] = {}
    wanted = sorted(set(seqs))
    with engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = conn.execute(
                sa.text(
                    "SELECT seq, published_at_ms FROM tokensync_outbox WHERE seq IN :seqs"
                ).bindparams(sa.bindparam("seqs", expanding=True)),
                {"seqs": chunk},
            )
            found.update({int(s): int(p) * 1000 for s, p in rows if p is not None})
    return found


def report(
    samples: Sequence[Sample],
    regions: Mapping[str, str],
    keys: RedisKeys,
    acked_by_store: Mapping[int, int],
    relay: str,
) -> dict[str, Any]:
    """Collect the regions' stamps, print the table, write ``propagation-breakdown``.
    The acknowledgement comes from a relay thread of this process (µs) or else from the
    store's ``published_at_ms`` (a relay process; ms)."""
    from bench.report import save
    from shared.stages import acked_at_us

    def acked(seq: int) -> int | None:
        return acked_at_us(seq) or acked_by_store.get(seq)

    stamps = {name: collect(url, keys) for name, url in regions.items()}
    per, incomplete = split(samples, stamps, acked)
    summaries = stats(per)
    print_table(summaries)
    biggest = {}
    for region, by_stage in summaries.items():
        biggest[region] = max(STAGES, key=lambda s: by_stage[s].get("p50", 0.0))
    print(f"biggest stage (p50) per region: {biggest}; incomplete samples: {incomplete}")
    data = {
        "stages": list(STAGES),
        "stats": summaries,
        "biggest_p50": biggest,
        "incomplete": incomplete,
        "relay": relay,
        "acknowledged_resolution_ms": 0.001 if relay == "thread" else 1,
        "samples": per,
        "method": "wall-clock stamps: the store call returned; the relay woke and produced "
        "(record header); the broker acknowledged (relay); the worker took the fetch and "
        "Redis answered the apply (region debug hash); the polling validator answered "
        "'invalid'. TOKENSYNC_STAGE_TIMING on for this run only.",
    }
    save("propagation-breakdown", data, plot(summaries))
    return data
