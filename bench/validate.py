"""Validation in one process: bare Redis GET, the local validator, the near-cache, and the
Sanctum way (PostgreSQL lookup by id, hash compare, ``last_used_at`` write), same run."""

from __future__ import annotations

import hmac
import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
import redis
import sqlalchemy as sa

from bench.env import BenchEnv, bench_env
from bench.report import save, summary, table
from shared.tokenformat import parse_presented

__all__ = ["run"]


def _sanctum(dsn: str) -> Callable[[str], bool]:
    """Laravel Sanctum's guard: find by id, compare hashes, write last_used_at (autocommit)."""
    conn = psycopg.connect(dsn, autocommit=True)

    def check(token: str) -> bool:
        parsed = parse_presented(token)
        if parsed is None:
            return False
        token_id = parsed.token_id
        row = conn.execute(
            "SELECT id, token, abilities, expires_at FROM personal_access_tokens WHERE id = %s",
            (token_id,),
        ).fetchone()
        if row is None or not hmac.compare_digest(row[1], parsed.token_hash):
            return False
        conn.execute(
            "UPDATE personal_access_tokens SET last_used_at = now(), updated_at = now() "
            "WHERE id = %s",
            (token_id,),
        )
        return True

    return check


def _measure(call: Callable[[], Any], seconds: float) -> list[float]:
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def run(seconds_per_method: float = 6.0, rounds: int = 3) -> dict[str, Any]:
    """Run the scenario; print a table; write JSON and PNG; return the data."""
    with bench_env(("eu",), postgres=True) as env:
        return _run(env, seconds_per_method, rounds)


def _run(env: BenchEnv, seconds: float, rounds: int) -> dict[str, Any]:
    from shared.usage import CLIENT, client_fingerprint
    from shared.validator import Outcome, Policy, Validator

    store = env.open_store(env.settings.database_url)
    env.start_relay()
    tokens = [
        store.issue("App\\Models\\User", i, "bench", ["read"]).plain_text_token for i in range(200)
    ]
    env.start_worker("eu")
    env.wait(lambda: env.state("eu").ready, 120, "region ready")
    ends = env.end_offsets()
    env.wait(lambda: env.caught_up("eu", ends), 120, "region caught up")

    url = env.settings.region("eu").redis_url
    client = redis.Redis.from_url(url)
    client.set("bench:probe", b"x" * 64)
    plain = Validator.from_url(url, keys=env.keys, policy=Policy(staleness_budget_s=5))
    # TOKENSYNC_SERVER_CHECK_INTERVAL=0: the replication-id check inside the script, every call
    strict = Validator.from_url(
        url, keys=env.keys, policy=Policy(staleness_budget_s=5, server_check_interval_s=0)
    )
    near = Validator.from_url(url, keys=env.keys, policy=Policy(staleness_budget_s=5))
    near.enable_near_cache()
    # usage as services run it (issue 19): counts per token and client, flushed by a timer
    used = Validator.from_url(url, keys=env.keys, policy=Policy(staleness_budget_s=5))
    used.enable_usage(interval_s=15.0)
    near_used = Validator.from_url(url, keys=env.keys, policy=Policy(staleness_budget_s=5))
    near_used.enable_near_cache()
    near_used.enable_usage(interval_s=15.0)
    CLIENT.set(client_fingerprint("198.51.100.7", "python-requests/2.32"))
    time.sleep(1.0)  # the near-cache's listener hears a heartbeat batch
    dsn = (
        sa.make_url(env.settings.database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    sanctum = _sanctum(dsn)
    assert all(plain.validate(t, ["read"]).outcome is Outcome.VALID for t in tokens)
    assert all(strict.validate(t, ["read"]).outcome is Outcome.VALID for t in tokens)
    assert all(sanctum(t) for t in tokens)

    rng = random.Random(1)
    methods: dict[str, Callable[[], Any]] = {
        "redis GET (baseline)": lambda: client.get("bench:probe"),
        "validator": lambda: plain.validate(rng.choice(tokens), ["read"]),
        "validator, server check every call": lambda: strict.validate(rng.choice(tokens), ["read"]),
        "validator + near-cache": lambda: near.validate(rng.choice(tokens), ["read"]),
        "validator + usage": lambda: used.validate(rng.choice(tokens), ["read"]),
        "validator + near-cache + usage": lambda: near_used.validate(rng.choice(tokens), ["read"]),
        "Sanctum way (PostgreSQL)": lambda: sanctum(rng.choice(tokens)),
    }
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):  # interleaved rounds: drift on a shared machine hits all alike
        for name, call in methods.items():
            for _ in range(200):
                call()  # warm
            samples[name] += _measure(call, seconds / rounds)
    for validator in (plain, strict, near, used, near_used):
        validator.close()
    client.close()

    stats = {
        name: {**summary(s), "ops_per_s": len(s) / (sum(s) / 1000)} for name, s in samples.items()
    }
    base = stats["redis GET (baseline)"]
    val, nc, sql = (
        stats["validator"],
        stats["validator + near-cache"],
        stats["Sanctum way (PostgreSQL)"],
    )
    ratios = {
        "validator_p50_over_get_p50": val["p50"] / base["p50"],
        "validator_throughput_over_sanctum": val["ops_per_s"] / sql["ops_per_s"],
        "near_cache_throughput_over_sanctum": nc["ops_per_s"] / sql["ops_per_s"],
        "usage_mean_over_validator_mean": stats["validator + usage"]["mean"] / val["mean"],
        "usage_mean_over_near_cache_mean": stats["validator + near-cache + usage"]["mean"]
        / nc["mean"],
    }
    targets = {
        "validator_p50_over_get_p50": ("<=", 1.3),
        "validator_throughput_over_sanctum": (">=", 3),
        "near_cache_throughput_over_sanctum": (">=", 100),
        "usage_mean_over_validator_mean": ("<=", 1.05),
        "usage_mean_over_near_cache_mean": ("<=", 1.05),
    }
    print(
        table(
            [(n, s["p50"] * 1000, s["p99"] * 1000, s["ops_per_s"]) for n, s in stats.items()],
            ["method", "p50 us", "p99 us", "ops/s (1 thread)"],
        )
    )
    for key, value in ratios.items():
        op, goal = targets[key]
        hit = value <= goal if op == "<=" else value >= goal
        print(f"{key:<40} {value:8.2f}   target {op} {goal:g}: {'hit' if hit else 'MISS'}")
    figure = _plot(stats)
    data = {
        "stats": stats,
        "ratios": ratios,
        "targets": {k: f"{op} {goal}" for k, (op, goal) in targets.items()},
        "method": f"{rounds} interleaved rounds of {seconds / rounds:.1f} s per method, "
        "one thread, random token among 200, local Redis and PostgreSQL on loopback",
    }
    save("validate", data, figure)
    return data


def _plot(stats: dict[str, dict[str, float]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(names))
    left.bar([i - 0.2 for i in x], [stats[n]["p50"] * 1000 for n in names], 0.4, label="p50")
    left.bar([i + 0.2 for i in x], [stats[n]["p99"] * 1000 for n in names], 0.4, label="p99")
    left.set_yscale("log")
    left.set_ylabel("latency (µs, log)")
    left.set_xticks(list(x), [n.replace(" (", "\n(") for n in names], fontsize=8)
    left.legend()
    left.set_title("one validation")
    right.bar(list(x), [stats[n]["ops_per_s"] for n in names], color="tab:green")
    right.set_yscale("log")
    right.set_ylabel("validations/s, one thread (log)")
    right.set_xticks(list(x), [n.replace(" (", "\n(") for n in names], fontsize=8)
    right.set_title("throughput")
    fig.suptitle("tokensync validation vs a bare GET and the Sanctum way")
    return fig
