"""``tokensync bench propagation --brokers 3``: the propagation benchmark on one broker and on
a three-broker cluster (RF 3, min ISR 2) in the same run, per region side by side, JSON and
picture like the other benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_demo_and_bench_at_a_terminal import _bench_piped

pytestmark = pytest.mark.e2e


def test_bench_propagation_with_three_brokers_reports_one_and_three_brokers_per_region(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    args = ("propagation", "--brokers", "3", "--samples", "10", "--epochs", "10")
    done = _bench_piped(tmp_path, results, *args, "--store", "sqlite")
    assert 0 == done.returncode, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stderr
    assert "on 1 broker and then on 3" in done.stderr
    assert "1 broker p50 / p99 ms" in done.stdout and "3 brokers p50 / p99 ms" in done.stdout
    data = json.loads((results / "propagation-brokers.json").read_text())
    assert (3, 3, 2) == (data["brokers"], data["replication_factor"], data["min_insync_replicas"])
    for kind in ("token", "epoch"):
        assert {"eu", "us", "ap"} == set(data["stats"][kind])
        for region, per in data["stats"][kind].items():
            assert {"1", "3"} == set(per), (kind, region)
            assert all(per[n]["n"] >= 10 and per[n]["p99"] > 0 for n in per), (kind, region, per)
    assert (results / "propagation-brokers.png").stat().st_size > 10_000
    for brokers in (1, 3):  # each setup's own figures, as a single run writes them
        assert (results / f"propagation-brokers-{brokers}.json").exists()
