"""A region worker loading the token topic: apply rate (records/s) and time to ready.

``apply`` loads 200,000 records, ``bootstrap`` 1,000,000 live tokens. The
records are written straight to the topic (signed, as the relay writes them),
so only the region's side is measured: a new worker from process start to ready.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from kafka import KafkaProducer

from bench.env import BenchEnv, bench_env
from bench.report import save, table
from shared.events import TokenEvent, TokenOp, encode
from shared.tokenformat import hash_token

__all__ = ["run"]


def _fill(env: BenchEnv, count: int) -> float:
    """Write ``count`` signed *issued* records; return seconds taken."""
    env.ensure_topics()
    keyring = env.keyring
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
        producer.send(
            env.topics.tokens, key=event.key, value=value, headers=keyring.sign(event.key, value)
        )
    producer.flush()
    producer.close()
    return time.monotonic() - began


def run(records: int, name: str) -> dict[str, Any]:
    """Fill the topic, start a worker on an empty region, time it to ready."""
    with bench_env(("fresh",)) as env:
        fill_s = _fill(env, records)
        started = time.monotonic()
        env.start_worker("fresh")
        first: float | None = None
        timeline: list[tuple[float, int]] = []
        while True:
            state = env.state("fresh")
            now = time.monotonic() - started
            timeline.append((now, state.bootstrap_loaded))
            if first is None and state.bootstrap_loaded > 0:
                first = now
            if state.ready:
                break
            if now > 600:
                raise TimeoutError("region not ready after 600 s")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        loading_s = ready_s - (first or 0.0)
    rate = records / loading_s if loading_s > 0 else 0.0
    print(
        table(
            [(name, records, fill_s, ready_s, loading_s, rate)],
            ["scenario", "records", "fill s", "to ready s", "loading s", "records/s"],
        )
    )
    data = {
        "records": records,
        "fill_seconds": fill_s,
        "process_start_to_ready_s": ready_s,
        "loading_s": loading_s,
        "records_per_s": rate,
        "timeline": timeline,
        "targets": {"records_per_s": 100_000, "bootstrap_1m_to_ready_s": 20},
        "method": "signed records written to the topic first; one worker process on an empty "
        "region; 'loading' counts from the first applied record to ready",
    }
    save(name, data, _plot(timeline, name, records))
    return data


def _plot(timeline: list[tuple[float, int]], name: str, records: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t for t, _ in timeline], [n for _, n in timeline])
    ax.set_xlabel("seconds since the worker process started")
    ax.set_ylabel("records applied")
    ax.set_title(f"{name}: a new region loads {records:,} records")
    return fig
