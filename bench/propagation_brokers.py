"""``tokensync bench propagation --brokers 3``: revoke -> denied per region on one broker
and on a three-broker KRaft cluster (RF 3, min ISR 2: every revocation is acknowledged by
two replicas), one after the other in the same run, reported side by side.

The cluster is what ``tokensync stack up --brokers 3`` runs (same jars, 256 MiB heaps);
each setup gets a throwaway deployment of its own (``bench.env``), so the two differ only
in Kafka.
"""

from __future__ import annotations

from typing import Any

from bench.env import BenchEnv, bench_env
from bench.report import save, summary, table
from stack.kafka import KafkaCluster, KafkaJars, default_cache_dir
from stack.process import ProcessRecord, free_port

__all__ = ["compare"]

REGIONS = ("eu", "us", "ap")


def _start_cluster(env: BenchEnv, brokers: int) -> list[ProcessRecord]:
    """Start ``brokers`` combined KRaft nodes under the run's folder; point the settings
    (relay, workers, admin) at every node."""
    jars = KafkaJars(default_cache_dir())
    jars.ensure()
    ports = [(free_port(), free_port()) for _ in range(brokers)]
    cluster = KafkaCluster.build(jars, env.root / "cluster", ports)
    records = cluster.start()
    try:
        cluster.wait_ready(records)
    except BaseException:
        KafkaCluster.stop(records)
        raise
    env.settings = env.settings.with_overrides(kafka_bootstrap=cluster.bootstrap)
    return records


def _replication(env: BenchEnv) -> int | None:
    from producer.kafka_io import KafkaAdmin

    admin = KafkaAdmin(env.settings.kafka_bootstrap, client=env.settings.kafka_client)
    try:
        return admin.replication(env.topics.tokens)
    finally:
        admin.close()


def _one(single: int, epochs: int, store: str, brokers: int) -> dict[str, Any]:
    from bench.propagation import _run

    with bench_env(
        REGIONS,
        postgres=store == "postgresql",
        mariadb=store == "mariadb",
        start_kafka=brokers == 1,
    ) as env:
        records = _start_cluster(env, brokers) if brokers > 1 else []
        try:
            data = _run(env, single, epochs, store, name=f"propagation-brokers-{brokers}")
            data["replication_factor"] = _replication(env)
            data["min_insync_replicas"] = 2 if brokers >= 3 else 1
            return data
        finally:
            env.close()  # workers and relay before the brokers they talk to
            if records:
                KafkaCluster.stop(records)


def compare(single: int, epochs: int, store: str, brokers: int) -> dict[str, Any]:
    """One broker, then ``brokers``; print both side by side; write
    ``bench/results/propagation-brokers.json`` and ``.png``."""
    runs = {1: _one(single, epochs, store, 1), brokers: _one(single, epochs, store, brokers)}
    stats: dict[str, dict[str, dict[str, dict[str, float]]]] = {
        kind: {
            region: {
                str(n): summary(run["samples"][kind].get(region, [])) for n, run in runs.items()
            }
            for region in REGIONS
        }
        for kind in ("token", "epoch")
    }
    rows = [
        (
            kind,
            region,
            f"{per['1']['p50']:.1f} / {per['1']['p99']:.1f}",
            f"{per[str(brokers)]['p50']:.1f} / {per[str(brokers)]['p99']:.1f}",
            per[str(brokers)]["n"],
        )
        for kind, regions in stats.items()
        for region, per in regions.items()
    ]
    print(
        table(
            rows,
            [
                "revocation",
                "region",
                "1 broker p50 / p99 ms",
                f"{brokers} brokers p50 / p99 ms",
                "n",
            ],
        )
    )
    worst = max(per[str(brokers)]["p99"] for regions in stats.values() for per in regions.values())
    relay = {str(n): run["relay_commit_to_ack_ms"] for n, run in runs.items()}
    print(
        f"{brokers} brokers (RF {runs[brokers]['replication_factor']}, min ISR "
        f"{runs[brokers]['min_insync_replicas']}): worst region p99 {worst:.1f} ms (target <= 50); "
        f"relay commit -> ack p50 {relay['1']['p50']:.1f} ms on 1 broker, "
        f"{relay[str(brokers)]['p50']:.1f} ms on {brokers}"
    )
    data = {
        "stats": stats,
        "brokers": brokers,
        "replication_factor": runs[brokers]["replication_factor"],
        "min_insync_replicas": runs[brokers]["min_insync_replicas"],
        "relay_commit_to_ack_ms": relay,
        "missed": {str(n): run["missed"] for n, run in runs.items()},
        "load": {str(n): run["load"] for n, run in runs.items()},
        "store": store,
        "worst_p99_ms": worst,
        "targets": {"p99_ms": 50},
        "method": "as bench propagation, run on one broker and then on the cluster, each in "
        "a throwaway deployment of its own",
    }
    save("propagation-brokers", data, _plot({n: run["samples"] for n, run in runs.items()}))
    return data


def _plot(samples: dict[int, dict[str, dict[str, list[float]]]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = dict(zip(REGIONS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, kind in zip(axes, ("token", "epoch"), strict=True):
        for brokers, per_kind in samples.items():
            for region, values in per_kind[kind].items():
                ordered = sorted(values)
                ax.plot(
                    ordered,
                    [i / len(ordered) for i in range(len(ordered))],
                    color=colors.get(region),
                    linestyle="-" if brokers > 1 else "--",
                    label=f"{region}, {brokers} broker{'s' if brokers > 1 else ''}",
                )
        ax.axvline(50, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("commit -> denied (ms)")
        ax.set_xscale("log")
        ax.set_title("one token" if kind == "token" else "principal epoch")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("fraction of revocations")
    fig.suptitle("revoke -> denied per region, one broker (dashed) vs a cluster (solid)")
    return fig
