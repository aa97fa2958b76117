"""Profile the relay's one-row batch (read, encode, sign, produce, ack, mark) on a throwaway
PostgreSQL + Kafka, with nothing else running: the figures behind docs/benchmarks.md's
"what bounds revoke -> denied". Run: .venv/bin/python scripts/profile_relay_batch.py"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time

from bench.env import bench_env
from producer.kafka_io import KafkaPublisher
from producer.relay import Relay, RelayOptions
from producer.wakeup import waker_for
from shared.logs import configure_logging

BATCHES = 300


def main() -> None:
    configure_logging("warning")
    with bench_env(("eu",), postgres=True) as env:
        store = env.open_store(env.settings.database_url)
        env.ensure_topics()
        publisher = KafkaPublisher(env.settings.kafka_bootstrap, env.topics.tokens)
        waker = waker_for(store.engine)
        relay = Relay(store.engine, lambda: publisher, env.keyring, waker, options=RelayOptions())
        tokens = [store.issue("App\\Models\\User", i, "t") for i in range(BATCHES)]
        while relay.publish_batch():
            pass
        took: list[float] = []
        profile = cProfile.Profile()
        for token in tokens:
            store.revoke_token(token.id)
            started = time.perf_counter()
            profile.enable()
            relay.publish_batch()
            profile.disable()
            took.append((time.perf_counter() - started) * 1000)
        print(f"one-row batch: median {statistics.median(took):.3f} ms over {BATCHES}")
        metrics = publisher._producer.metrics()  # kafka-python's own: send -> response
        for group, values in sorted(metrics.items()):
            for name in ("request-latency-avg", "request-latency-max", "record-queue-time-avg"):
                if name in values:
                    print(f"kafka-python {group} {name}: {values[name]:.3f} ms")
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(35)
        print(out.getvalue())
        publisher.close()
        waker.close()


if __name__ == "__main__":
    main()
