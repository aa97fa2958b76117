"""Revoke -> denied in every region, measured by validators polling in each region, under a
background issue/validate load: one-token revocations and principal epochs."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from bench import breakdown as stage_breakdown
from bench.env import BenchEnv, bench_env
from bench.report import save, summary, table
from producer.records import IssuedToken
from producer.store import TokenStore
from shared import stages
from shared.validator import Outcome, Policy, Validator

__all__ = ["run"]

USER = "App\\Models\\User"


class _Pollers:
    """One polling thread per region; each times the first denial of the current target."""

    def __init__(self, env: BenchEnv) -> None:
        self.validators = {
            r.name: Validator.from_url(r.redis_url, keys=env.keys, policy=Policy())
            for r in env.settings.regions
        }
        self.target = ""
        self.committed = 0.0
        self.results: dict[str, float] = {}
        self.committed_us = 0  # wall clock, for --breakdown
        self.denied_us: dict[str, int] = {}
        self.mutation: Any = None
        self.go = {name: threading.Event() for name in self.validators}
        self.done = threading.Event()
        self.stop = False
        self.threads = [
            threading.Thread(target=self._poll, args=(n,), daemon=True) for n in self.validators
        ]
        for thread in self.threads:
            thread.start()

    def _poll(self, name: str) -> None:
        validator = self.validators[name]
        while not self.stop:
            if not self.go[name].wait(0.5):
                continue
            self.go[name].clear()
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                if validator.validate(self.target).outcome is Outcome.INVALID:
                    self.results[name] = (time.perf_counter() - self.committed) * 1000
                    self.denied_us[name] = stages.now_us()
                    break
            if len(self.results) == len(self.validators):
                self.done.set()

    def measure(self, token: str, revoke: Any) -> dict[str, float]:
        self.target = token
        self.results = {}
        self.denied_us = {}
        self.done.clear()
        self.mutation = revoke()
        self.committed = time.perf_counter()
        self.committed_us = stages.now_us()
        for event in self.go.values():
            event.set()
        self.done.wait(6)
        return dict(self.results)

    def close(self) -> None:
        self.stop = True
        for thread in self.threads:
            thread.join(2)
        for v in self.validators.values():
            v.close()


def _load(env: BenchEnv, stop: threading.Event, counts: dict[str, int]) -> None:
    """Background load: issue ~50 tokens/s and validate continuously in the first region."""
    assert env.store is not None
    region = env.settings.regions[0]
    validator = Validator.from_url(region.redis_url, keys=env.keys)
    issued: list[str] = []
    next_issue = time.monotonic()
    while not stop.is_set():
        if time.monotonic() >= next_issue:
            issued.append(env.store.issue(USER, random.randint(1, 10**6), "load").plain_text_token)
            counts["issued"] += 1
            next_issue += 0.02
        if issued:
            validator.validate(random.choice(issued))
            counts["validated"] += 1
    validator.close()


def run(
    single: int = 1000,
    epochs: int = 1000,
    store: str = "postgresql",
    brokers: int = 1,
    *,
    breakdown: bool = False,
    relay: str = "process",
) -> dict[str, Any]:
    """Run the scenario; print a table; write JSON and PNG; return the data. With
    ``brokers`` > 1 it runs on one broker and then on a cluster of ``brokers`` (see
    ``bench.propagation_brokers``), side by side. With ``breakdown``, also each sample's
    stages (``bench.breakdown``). ``relay``: a ``tokensync relay`` process, as deployed
    (default), or a thread of this process."""
    if brokers > 1:
        from bench.propagation_brokers import compare

        return compare(single, epochs, store, brokers)
    with bench_env(
        ("eu", "us", "ap"), postgres=store == "postgresql", mariadb=store == "mariadb"
    ) as env:
        return _run(env, single, epochs, store, breakdown=breakdown, relay_kind=relay)


def _start(env: BenchEnv, relay_kind: str, breakdown: bool) -> TokenStore:
    """Open the store and start the relay (its own process, or a thread of this one)."""
    if breakdown:  # the relay and the workers read it from the settings (or this process)
        env.settings = env.settings.with_overrides(stage_timing=True)
        stages.enable(True)
    store = env.open_store(env.settings.database_url)
    if relay_kind == "thread":
        env.start_relay()
    else:  # the pollers' and the load's threads do not compete with it for a GIL
        env.ensure_topics()
        env.start_relay_process()
    return store


def _run(
    env: BenchEnv,
    single: int,
    epochs: int,
    store_kind: str,
    name: str | None = None,
    *,
    breakdown: bool = False,
    relay_kind: str = "process",
) -> dict[str, Any]:
    store = _start(env, relay_kind, breakdown)
    for region in env.settings.regions:
        env.start_worker(region.name)
    for region in env.settings.regions:
        env.wait_ready(region.name, 120)
    targets = [store.issue(USER, 10_000_000 + i, "target") for i in range(single)]
    owners = [store.issue(USER, 20_000_000 + i, "principal") for i in range(epochs)]
    last = owners[-1].seq
    env.wait(lambda: store.position(last).offset is not None, 120, "targets published")
    ends = env.end_offsets()
    for region in env.settings.regions:
        env.wait_caught_up(region.name, ends, 120, "targets applied")

    pollers = _Pollers(env)
    stop = threading.Event()
    counts = {"issued": 0, "validated": 0}
    load = threading.Thread(target=_load, args=(env, stop, counts), daemon=True)
    load.start()
    began = time.monotonic()
    samples: dict[str, dict[str, list[float]]] = {"token": {}, "epoch": {}}
    missed = {"token": 0, "epoch": 0}
    timed: list[stage_breakdown.Sample] = []

    def sample(kind: str, token: IssuedToken, revoke: Any) -> None:
        result = pollers.measure(token.plain_text_token, revoke)
        if len(result) < len(pollers.validators):
            missed[kind] += 1
        for name, ms in result.items():
            samples[kind].setdefault(name, []).append(ms)
        if breakdown:
            seq = pollers.mutation.seq
            timed.append(stage_breakdown.Sample(kind, seq, pollers.committed_us, pollers.denied_us))

    for token in targets:
        sample("token", token, lambda t=token: store.revoke_token(t.id))
    for token in owners:
        sample("epoch", token, lambda t=token: store.revoke_principal(USER, t.tokenable_id))
    stop.set()
    load.join(5)
    elapsed = time.monotonic() - began
    pollers.close()

    stats = {
        kind: {name: summary(values) for name, values in per.items()}
        for kind, per in samples.items()
    }
    relay = summary(env.relay_lag_ms(revocations_only=True))
    print(
        f"relay, commit -> acknowledged by Kafka: p50 {relay['p50']:.1f} ms, "
        f"p99 {relay['p99']:.1f} ms over {relay['n']} revocations"
    )
    rows = [
        (kind, name, s["p50"], s["p99"], s["max"], s["n"])
        for kind, per in stats.items()
        for name, s in per.items()
    ]
    print(table(rows, ["revocation", "region", "p50 ms", "p99 ms", "max ms", "samples"]))
    worst_p50 = max(s["p50"] for per in stats.values() for s in per.values())
    worst_p99 = max(s["p99"] for per in stats.values() for s in per.values())
    print(
        f"worst region p50 {worst_p50:.1f} ms (target <= 8), "
        f"p99 {worst_p99:.1f} ms (target <= 25); "
        f"background load: {counts['issued'] / elapsed:.0f} issues/s, "
        f"{counts['validated'] / elapsed:.0f} validations/s; missed samples {missed}"
    )
    data = {
        "stats": stats,
        "relay_commit_to_ack_ms": relay,
        "missed": missed,
        "store": store_kind,
        "relay": relay_kind,
        "load": {
            "issues_per_s": counts["issued"] / elapsed,
            "validations_per_s": counts["validated"] / elapsed,
        },
        "targets": {"p50_ms": 20, "p99_ms": 50},
        "method": "commit of the revocation in the store (call returned) to the first "
        "'invalid' answer of a validator polling that region's Redis",
    }
    # PostgreSQL's figure stays bench/results/propagation.*; other stores get their own.
    name = name or ("propagation" if store_kind == "postgresql" else f"propagation-{store_kind}")
    save(name, data, _plot(samples))
    if breakdown:
        regions = {r.name: r.redis_url for r in env.settings.regions}
        acked = stage_breakdown.acked_in_store(store.engine, [s.seq for s in timed])
        data["breakdown"] = stage_breakdown.report(timed, regions, env.keys, acked, relay_kind)
    return {**data, "samples": samples}  # the raw samples in memory only (comparisons)


def _plot(samples: dict[str, dict[str, list[float]]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (kind, per) in zip(axes, samples.items(), strict=True):
        for name, values in per.items():
            ordered = sorted(values)
            ax.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=name)
        ax.axvline(20, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(50, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("commit -> denied (ms)")
        ax.set_title("one token" if kind == "token" else "principal epoch")
        ax.legend()
    axes[0].set_ylabel("fraction of revocations")
    fig.suptitle("revoke -> denied per region (CDF; dashed 20 ms, dotted 50 ms)")
    return fig
