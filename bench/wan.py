"""Geography on one machine: regions 0, 40 and 90 ms (one way) from Kafka and the store.

Each delayed region reaches Kafka through a delaying proxy in front of a broker
listener of its own, and the token store (PostgreSQL) through another. Per
region: validation by the local validator, the near-cache, and the Sanctum way
against the distant store; and revoke -> denied for one token and one epoch.

Each revocation sample starts after a random pause (``PAUSE_S``), so it reaches the broker
at a random phase of each region's fetch cycle, as a responder's revocation does. Back to
back (the ``burst`` figure, also measured) a sample starts just as the farthest region's
worker sent its next fetch: the previous sample ended when that region applied its record,
so the new record waits at the broker for that fetch, and a far region sees two one-way
trips; that is the cost of a revocation right behind another, not of one alone.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import sqlalchemy as sa

from bench.env import BenchEnv, bench_env
from bench.propagation import USER, _Pollers
from bench.report import save, summary, table
from bench.validate import _measure, _sanctum
from shared.validator import Policy, Validator
from stack import KafkaBroker, KafkaJars, default_cache_dir, free_port
from stack.delayproxy import DelayProxy

__all__ = ["run"]

DELAYS = {"near": 0.0, "mid": 0.040, "far": 0.090}

#: Range of the random pause (seconds) before each isolated revocation sample.
PAUSE_S = (0.0, 1.0)


class _Proxies:
    """Delaying proxies served by one background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[Any] = []

    def add(self, target_port: int, delay_s: float) -> int:
        port = free_port()
        ready = threading.Event()

        async def start() -> None:
            started = asyncio.Event()
            self.tasks.append(
                asyncio.ensure_future(
                    DelayProxy(port, "127.0.0.1", target_port, delay_s).serve(started)
                )
            )
            await started.wait()
            ready.set()

        asyncio.run_coroutine_threadsafe(start(), self.loop)
        ready.wait(10)
        return port

    def close(self) -> None:
        async def cancel_all() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def run(samples: int = 200) -> dict[str, Any]:
    """Run the scenario; print tables; write JSON and PNG; return the data."""
    proxies = _Proxies()
    try:
        with bench_env(tuple(DELAYS), postgres=True, start_kafka=False) as env:
            return _run(env, proxies, samples)
    finally:
        proxies.close()


def _start_kafka(env: BenchEnv, proxies: _Proxies) -> dict[str, str]:
    """A broker with a listener per delayed region, advertised as that region's proxy;
    returns each region's bootstrap address."""
    binds = {name: free_port() for name, delay in DELAYS.items() if delay > 0}
    advertised = {name: proxies.add(bind, DELAYS[name]) for name, bind in binds.items()}
    listeners = tuple((f"REGION_{n.upper()}", binds[n], advertised[n]) for n in binds)
    broker = KafkaBroker(
        KafkaJars(default_cache_dir()),
        env.root / "kafka",
        free_port(),
        free_port(),
        "1g",
        listeners,
    )
    record = broker.start()
    env.processes.append(record)
    broker.wait_ready(record)
    env.settings = env.settings.with_overrides(kafka_bootstrap=broker.bootstrap)
    return {
        n: f"127.0.0.1:{advertised[n]}" if n in advertised else broker.bootstrap for n in DELAYS
    }


def _validations(
    plain: Validator, near: Validator, sanctum: Any, texts: list[str], delay: float
) -> dict[str, list[float]]:
    """Samples (ms) of each way to validate, from one region; the Sanctum way gets longer
    to collect enough samples over a slow link."""
    rng = random.Random(2)
    return {
        "local validator": _measure(lambda: plain.validate(rng.choice(texts), ["read"]), 2.0),
        "near-cache": _measure(lambda: near.validate(rng.choice(texts), ["read"]), 1.0),
        "Sanctum way": _measure(lambda: sanctum(rng.choice(texts)), 3.0 + 10 * delay),
    }


def _run(env: BenchEnv, proxies: _Proxies, samples: int) -> dict[str, Any]:
    bootstraps = _start_kafka(env, proxies)
    store = env.open_store(env.settings.database_url)
    env.start_relay()
    for name in DELAYS:
        env.start_worker(name, kafka_bootstrap=bootstraps[name])
    for name in DELAYS:
        env.wait_ready(name, 180)
    tokens = [store.issue(USER, i, "wan", ["read"]) for i in range(100)]
    env.wait(lambda: store.position(tokens[-1].seq).offset is not None, 60, "published")
    ends = env.end_offsets()
    for name in DELAYS:
        env.wait_caught_up(name, ends, 180, f"{name} caught up")

    url = sa.make_url(env.settings.database_url)
    validation: dict[str, dict[str, Any]] = {}
    for name, delay in DELAYS.items():
        pg_port = proxies.add(url.port or 5432, delay) if delay else (url.port or 5432)
        dsn = url.set(drivername="postgresql", port=pg_port).render_as_string(hide_password=False)
        sanctum = _sanctum(dsn)
        redis_url = env.settings.region(name).redis_url
        plain = Validator.from_url(redis_url, keys=env.keys, policy=Policy())
        near = Validator.from_url(redis_url, keys=env.keys, policy=Policy())
        near.enable_near_cache()
        time.sleep(1.0)
        per = _validations(plain, near, sanctum, [t.plain_text_token for t in tokens], delay)
        validation[name] = {m: summary(s) for m, s in per.items()}
        validation[name]["sanctum_p50_over_local_p50"] = (
            validation[name]["Sanctum way"]["p50"] / validation[name]["local validator"]["p50"]
        )
        plain.close()
        near.close()

    pollers = _Pollers(env)
    targets = [store.issue(USER, 10_000_000 + i, "t") for i in range(samples)]
    owners = [store.issue(USER, 20_000_000 + i, "p") for i in range(samples // 2)]
    bursts = [store.issue(USER, 30_000_000 + i, "b") for i in range(samples)]
    env.wait(lambda: store.position(bursts[-1].seq).offset is not None, 60, "published")
    ends = env.end_offsets()
    for name in DELAYS:
        env.wait_caught_up(name, ends, 120, f"{name} caught up")
    revoke: dict[str, dict[str, list[float]]] = {"token": {}, "epoch": {}, "burst": {}}
    pause = random.Random(3)
    for t in targets:
        time.sleep(pause.uniform(*PAUSE_S))
        for n, ms in pollers.measure(
            t.plain_text_token, lambda t=t: store.revoke_token(t.id)
        ).items():
            revoke["token"].setdefault(n, []).append(ms)
    for t in owners:
        time.sleep(pause.uniform(*PAUSE_S))
        result = pollers.measure(
            t.plain_text_token, lambda t=t: store.revoke_principal(USER, t.tokenable_id)
        )
        for n, ms in result.items():
            revoke["epoch"].setdefault(n, []).append(ms)
    for t in bursts:  # back to back: each right after the previous one reached every region
        for n, ms in pollers.measure(
            t.plain_text_token, lambda t=t: store.revoke_token(t.id)
        ).items():
            revoke["burst"].setdefault(n, []).append(ms)
    pollers.close()
    revoke_stats = {k: {n: summary(v) for n, v in per.items()} for k, per in revoke.items()}

    rows = []
    for name, delay in DELAYS.items():
        v = validation[name]
        rows.append(
            (
                name,
                f"{delay * 1000:.0f}",
                v["local validator"]["p50"],
                v["near-cache"]["p50"],
                v["Sanctum way"]["p50"],
                v["sanctum_p50_over_local_p50"],
                revoke_stats["token"][name]["p50"],
                revoke_stats["token"][name]["p99"],
                revoke_stats["epoch"][name]["p50"],
                revoke_stats["burst"][name]["p50"],
            )
        )
    print(
        table(
            rows,
            [
                "region",
                "one-way ms",
                "local p50 ms",
                "near p50 ms",
                "Sanctum p50 ms",
                "Sanctum/local",
                "revoke p50 ms",
                "revoke p99 ms",
                "epoch p50 ms",
                "back-to-back p50 ms",
            ],
        )
    )
    data = {
        "delays_s": DELAYS,
        "pause_s": PAUSE_S,
        "validation": validation,
        "revoke": revoke_stats,
        "method": "regions reach Kafka through a delaying proxy in front of a broker listener of "
        "their own (advertised as the proxy) and the store through another; "
        "revoke -> denied from the store's commit to a region's first denial; each token and "
        "epoch sample after a random pause in pause_s (a random phase of every region's fetch "
        "cycle), the burst samples back to back",
    }
    save("wan", data, _plot(validation, revoke_stats))
    return data


def _plot(
    validation: dict[str, dict[str, Any]], revoke: dict[str, dict[str, dict[str, float]]]
) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    names = list(DELAYS)
    x = range(len(names))
    for i, method in enumerate(["local validator", "near-cache", "Sanctum way"]):
        left.bar(
            [j + (i - 1) * 0.27 for j in x],
            [validation[n][method]["p50"] for n in names],
            0.27,
            label=method,
        )
    left.set_yscale("log")
    left.set_xticks(list(x), [f"{n}\n{DELAYS[n] * 1000:.0f} ms" for n in names])
    left.set_ylabel("validation p50 (ms, log)")
    left.legend()
    left.set_title("validation: local vs the distant store")
    for kind, marker in (("token", "o"), ("epoch", "s")):
        right.plot(
            [DELAYS[n] * 1000 for n in names],
            [revoke[kind][n]["p50"] for n in names],
            marker=marker,
            label=f"{kind} p50",
        )
        right.plot(
            [DELAYS[n] * 1000 for n in names],
            [revoke[kind][n]["p99"] for n in names],
            marker=marker,
            linestyle=":",
            label=f"{kind} p99",
        )
    right.plot([0, 90], [0, 90], color="grey", linestyle="--", label="one one-way trip")
    right.set_xlabel("one-way link delay (ms)")
    right.set_ylabel("revoke -> denied (ms)")
    right.legend()
    right.set_title("revoke -> denied vs distance")
    return fig
