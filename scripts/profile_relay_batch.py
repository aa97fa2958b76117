"""Profile the relay's one-row batch (read, encode, sign, produce, ack, mark) on a throwaway
PostgreSQL + Kafka, with nothing else running: the figures behind docs/benchmarks.md's
"what bounds revoke -> denied". The relay holds a lease with the TTL of ``tokensync relay``
(3 s), as deployed: its lease confirm and renewal are part of each batch.
Run: .venv/bin/python scripts/profile_relay_batch.py"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time

from bench.env import bench_env
from producer.kafka_io import KafkaPublisher
from producer.relay import Relay, RelayOptions
from producer.relay_lease import RelayLease, holder_id
from producer.wakeup import waker_for
from shared.logs import configure_logging

BATCHES = 300
#: functions whose time per batch is printed on one line each (cumulative, profiler included)
PARTS = (
    ("relay.py", "publish_batch"),
    ("outbox.py", "fetch_unpublished"),
    ("relay_failover.py", "confirm"),
    ("kafka_io.py", "publish"),
    ("relay.py", "_mark"),
    ("default.py", "do_ping"),  # the pool's pre-ping of a checkout
)


def main() -> None:
    configure_logging("warning")
    with bench_env(("eu",), postgres=True) as env:
        store = env.open_store(env.settings.database_url)
        env.ensure_topics()
        publisher = KafkaPublisher(env.settings.kafka_bootstrap, env.topics.tokens)
        waker = waker_for(store.engine)
        lease = RelayLease(store.engine, holder_id(), ttl_ms=3000)
        options = RelayOptions(lease_renew_interval_s=1.0)
        relay = Relay(
            store.engine, lambda: publisher, env.keyring, waker, options=options, lease=lease
        )
        assert relay.lease_step()
        tokens = [store.issue("App\\Models\\User", i, "t") for i in range(BATCHES)]
        while relay.publish_batch():
            pass
        took: list[float] = []
        profile = cProfile.Profile()
        for token in tokens:
            store.revoke_token(token.id)
            relay.lease_step()  # renews every second, as the loop does (outside the timing)
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
        stats = pstats.Stats(profile)
        for file, func in PARTS:
            cum = sum(
                v[3]
                for k, v in stats.stats.items()  # type: ignore[attr-defined]
                if k[0].endswith(file) and k[2] == func
            )
            print(f"per batch: {file}:{func} {cum * 1000 / BATCHES:.3f} ms")
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(35)
        print(out.getvalue())
        relay.close()
        waker.close()


if __name__ == "__main__":
    main()
