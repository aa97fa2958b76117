"""A region worker loading the token topic: apply rate (records/s) and time to ready.

``apply`` loads 200,000 records, ``bootstrap`` 1,000,000 live tokens. The
records are written straight to the topic (signed, as the relay writes them in signing
mode ``both``: an HMAC on every record and a seal per partition after every 5,000), so
only the region's side is measured: a new worker from process start to ready, once per
signing mode (``hmac``, then ``sealed``, each on an empty region of its own, one after
the other on the same topic).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from kafka import KafkaProducer

from bench.env import BenchEnv, bench_env
from bench.report import save, table
from producer.publisher import OutgoingRecord
from producer.relay import partition_for
from shared.events import TokenEvent, TokenOp, encode
from shared.seal import SealSigner, record_digest
from shared.seal_keys import SealKeyDir
from shared.tokenformat import hash_token

#: Rows the relay publishes at most per batch (``RelayOptions.batch_size``).
RELAY_BATCH = 5000

__all__ = ["run"]


def _sealed(signer: SealSigner, topic: str, batch: list[OutgoingRecord]) -> list[OutgoingRecord]:
    """One relay batch as ``SealingPublisher`` lays it out: each partition's records,
    then their seals."""
    by_partition: dict[int, list[OutgoingRecord]] = {}
    for record in batch:
        by_partition.setdefault(record.partition or 0, []).append(record)
    out: list[OutgoingRecord] = []
    for partition, records in by_partition.items():
        out += records
        covered = [(r.key, record_digest(r.key, r.value, r.headers)) for r in records]
        out += [
            OutgoingRecord(k, v, h, partition)
            for k, v, h in signer.seals(topic, partition, covered)
        ]
    return out


def _fill(env: BenchEnv, count: int, signer: SealSigner) -> float:
    """Write ``count`` signed and sealed *issued* records; return seconds taken."""
    env.ensure_topics()
    keyring = env.keyring
    partitions = env.settings.partitions
    batch: list[OutgoingRecord] = []
    producer = KafkaProducer(
        bootstrap_servers=env.settings.kafka_bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    began = time.monotonic()
    now = int(time.time() * 1000)
    salt = secrets.token_hex(4)
    try:
        for i in range(count):
            event = TokenEvent(
                i + 1,
                TokenOp.ISSUED,
                hash_token(f"{salt}-{i}"),
                i + 1,
                "App\\Models\\User",
                str(i % 50_000),
                "bench",
                ("*",),
                now,
                now,
                None,
                now,
            )
            value = encode(event)
            key = event.key
            batch.append(
                OutgoingRecord(key, value, keyring.sign(key, value), partition_for(key, partitions))
            )
            if len(batch) == RELAY_BATCH or i == count - 1:
                for r in _sealed(signer, env.topics.tokens, batch):
                    producer.send(
                        env.topics.tokens,
                        key=r.key,
                        value=r.value,
                        headers=r.headers,
                        partition=r.partition,
                    )
                batch = []
        producer.flush()
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM): no client left talking to a broker being stopped
        producer.close(timeout=0)
        raise
    producer.close()
    return time.monotonic() - began


def _load(
    env: BenchEnv, region: str, mode: str, workers: int = 1
) -> tuple[float, float, list[tuple[float, int]]]:
    """Start ``workers`` worker processes in signing ``mode`` on the empty ``region``; (to
    ready s, loading s, timeline); the workers are stopped after."""
    env.settings = env.settings.with_overrides(signing_mode=mode)
    names = [f"worker-{region}" if workers == 1 else f"worker-{region}-{i}" for i in range(workers)]
    started = time.monotonic()
    for name in names:  # one consumer group: the region's partitions are shared among them
        env.start_worker(region, name=name)
    first: float | None = None
    timeline: list[tuple[float, int]] = []
    while True:
        state = env.state(region)
        now = time.monotonic() - started
        timeline.append((now, state.bootstrap_loaded))
        if first is None and state.bootstrap_loaded > 0:
            first = now
        if state.ready:
            break
        if now > 600:
            raise TimeoutError(f"region {region} not ready after 600 s")
        time.sleep(0.05)
    ready_s = time.monotonic() - started
    for name in names:
        env.stop(name, grace_s=20)
    return ready_s, ready_s - (first or 0.0), timeline


def run(
    records: int, name: str, modes: tuple[str, ...] = ("hmac", "sealed"), workers: int = 1
) -> dict[str, Any]:
    """Fill the topic, then per signing mode start ``workers`` worker processes (one
    consumer group, sharing the partitions) on an empty region of its own and time it to
    ready."""
    with bench_env(modes) as env:
        keys = SealKeyDir(env.root / "seal-keys")
        keys.generate()
        env.settings = env.settings.with_overrides(seal_keys_dir=keys.path)
        fill_s = _fill(env, records, keys.signer())
        results = {mode: _load(env, mode, mode, workers) for mode in modes}
    rows = []
    per_mode: dict[str, Any] = {}
    for mode, (ready_s, loading_s, timeline) in results.items():
        rate = records / loading_s if loading_s > 0 else 0.0
        rows.append((f"{name} {mode}", workers, records, fill_s, ready_s, loading_s, rate))
        per_mode[mode] = {
            "process_start_to_ready_s": ready_s,
            "loading_s": loading_s,
            "records_per_s": rate,
            "timeline": timeline,
        }
    print(
        table(
            rows,
            ["scenario", "workers", "records", "fill s", "to ready s", "loading s", "records/s"],
        )
    )
    first = per_mode[modes[0]]
    data = {
        "records": records,
        "workers": workers,
        "fill_seconds": fill_s,
        # the first mode's figures at the top level, as before the modes existed
        "process_start_to_ready_s": first["process_start_to_ready_s"],
        "loading_s": first["loading_s"],
        "records_per_s": first["records_per_s"],
        "timeline": first["timeline"],
        "modes": per_mode,
        "targets": {
            "records_per_s": 100_000,
            "bootstrap_1m_to_ready_s": 20,
            "sealed_rate_vs_hmac": 0.9,
        },
        "method": "records written to the topic first, as the relay writes them in signing "
        "mode both (an HMAC per record, an Ed25519 seal per partition per 5,000-record batch); "
        "per mode one worker process on an empty region of its own, one mode after the other; "
        "'loading' counts from the first applied record to ready; with several workers "
        "they are processes of one region (one consumer group sharing its partitions)",
    }
    if "hmac" in per_mode and "sealed" in per_mode and per_mode["hmac"]["records_per_s"]:
        data["sealed_rate_vs_hmac"] = (
            per_mode["sealed"]["records_per_s"] / per_mode["hmac"]["records_per_s"]
        )
        print(f"sealed / hmac apply rate: {data['sealed_rate_vs_hmac']:.2f}")
    save(name, data, _plot(results, name, records))
    return data


def _plot(
    results: dict[str, tuple[float, float, list[tuple[float, int]]]], name: str, records: int
) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, (_, _, timeline) in results.items():
        ax.plot([t for t, _ in timeline], [n for _, n in timeline], label=mode)
    ax.legend(title="signing mode")
    ax.set_xlabel("seconds since the worker process started")
    ax.set_ylabel("records applied")
    ax.set_title(f"{name}: a new region loads {records:,} records")
    return fig
