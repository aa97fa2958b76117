"""The gate's ``/auth`` over keep-alive HTTP at 1, 8 and 32 connections, beside the same
answer as an ASGI app under uvicorn (the baseline to beat), the in-process validator and
the Sanctum way (PostgreSQL lookup + ``last_used_at`` write), all in the same run.

The load comes from one asyncio (uvloop) process that sends pre-built requests on N
keep-alive connections and times each from write to the last byte of its answer; the
in-process validator and the Sanctum way run N concurrent tasks the same way.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.env import BenchEnv, bench_env
from bench.load import http_load, run_async, task_load
from bench.report import save, summary, table
from shared.validator import AsyncValidator, Outcome, Policy
from stack.process import free_port, port_open, stop_pid, wait_until

__all__ = ["run"]

CONCURRENCY = (1, 8, 32)
GATE = "gate /auth"
GATE_NO_CACHE = "gate /auth, no near-cache"
UVICORN = "uvicorn ASGI /auth (baseline)"
IN_PROCESS = "in-process AsyncValidator"
SANCTUM = "Sanctum way (PostgreSQL)"


class _AsyncSanctum:
    """Laravel Sanctum's guard on one async PostgreSQL connection: find by id, compare
    hashes, write ``last_used_at`` (autocommit), as bench.validate does synchronously."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> _AsyncSanctum:
        import psycopg

        return cls(await psycopg.AsyncConnection.connect(dsn, autocommit=True))

    async def __call__(self, token: str) -> bool:
        import hmac

        from shared.tokenformat import parse_presented

        parsed = parse_presented(token)
        if parsed is None:
            return False
        token_id = parsed.token_id
        cursor = await self.conn.execute(
            "SELECT id, token, abilities, expires_at FROM personal_access_tokens WHERE id = %s",
            (token_id,),
        )
        row = await cursor.fetchone()
        if row is None or not hmac.compare_digest(row[1], parsed.token_hash):
            return False
        await self.conn.execute(
            "UPDATE personal_access_tokens SET last_used_at = now(), updated_at = now() "
            "WHERE id = %s",
            (token_id,),
        )
        return True

    async def close(self) -> None:
        await self.conn.close()


def _start(env: BenchEnv, name: str, argv: list[str], extra: dict[str, str]) -> Any:
    log = (env.root / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        env={**env.env(), **extra},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=env.root,
    )
    log.close()
    return proc


def run(seconds: float = 3.0, workers: int = 2) -> dict[str, Any]:
    """Run the scenario; print a table; write JSON and PNG; return the data."""
    with bench_env(("eu",), postgres=True) as env:
        return _run(env, seconds, workers)


def _run(env: BenchEnv, seconds: float, workers: int) -> dict[str, Any]:
    store = env.open_store(env.settings.database_url)
    env.start_relay()
    tokens = [
        store.issue("App\\Models\\User", i, "bench", ["orders:read"]).plain_text_token
        for i in range(200)
    ]
    env.start_worker("eu")
    env.wait(lambda: env.state("eu").ready, 120, "region ready")
    ends = env.end_offsets()
    env.wait(lambda: env.caught_up("eu", ends), 120, "region caught up")

    ports = {GATE: free_port(), GATE_NO_CACHE: free_port(), UVICORN: free_port()}
    py = sys.executable
    servers = {
        GATE: _start(
            env,
            "gate",
            [
                py,
                "-m",
                "shared",
                "gate",
                "--region",
                "eu",
                "--port",
                str(ports[GATE]),
                "--workers",
                str(workers),
            ],
            {},
        ),
        GATE_NO_CACHE: _start(
            env,
            "gate-nc",
            [
                py,
                "-m",
                "shared",
                "gate",
                "--region",
                "eu",
                "--port",
                str(ports[GATE_NO_CACHE]),
                "--workers",
                str(workers),
                "--no-near-cache",
            ],
            {},
        ),
        UVICORN: _start(
            env,
            "uvicorn",
            [
                py,
                "-m",
                "uvicorn",
                "--factory",
                "bench.gate_asgi:create_app",
                "--port",
                str(ports[UVICORN]),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            {"BENCH_GATE_REGION": "eu", "PYTHONPATH": str(Path.cwd())},
        ),
    }
    try:
        logs = {GATE: "gate", GATE_NO_CACHE: "gate-nc", UVICORN: "uvicorn"}
        for name, port in ports.items():
            up = functools.partial(port_open, port)
            wait_until(up, 60, name, env.root / f"{logs[name]}.log")
        time.sleep(1.0)  # every worker process up and its near-cache listening
        data = _measure_all(env, tokens, ports, seconds, workers)
    finally:
        for proc in servers.values():
            stop_pid(proc.pid, py, grace_s=10)
            proc.wait(timeout=10)
    return data


def _measure_all(
    env: BenchEnv,
    tokens: list[str],
    ports: dict[str, int],
    seconds: float,
    workers: int,
    *,
    rounds: int = 3,
) -> dict[str, Any]:
    requests = [
        f"GET /auth?ability=orders:read HTTP/1.1\r\nHost: gate\r\n"
        f"Authorization: Bearer {t}\r\n\r\n".encode()
        for t in tokens
    ]
    dsn = (
        sa.make_url(env.settings.database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    url = env.settings.region("eu").redis_url

    async def in_process(c: int, secs: float) -> tuple[list[float], float, int]:
        validator = AsyncValidator.from_url(url, keys=env.keys, policy=Policy())

        async def call(rng: random.Random) -> bool:
            result = await validator.validate(rng.choice(tokens), ["orders:read"])
            return bool(result.outcome is Outcome.VALID)

        try:
            return await task_load(call, c, secs)
        finally:
            await validator.close()

    async def sanctum(c: int, secs: float) -> tuple[list[float], float, int]:
        checks = [await _AsyncSanctum.connect(dsn) for _ in range(c)]
        pool = asyncio.Queue[_AsyncSanctum]()
        for check in checks:
            pool.put_nowait(check)

        async def call(rng: random.Random) -> bool:
            check = await pool.get()
            try:
                return await check(rng.choice(tokens))
            finally:
                pool.put_nowait(check)

        try:
            return await task_load(call, c, secs)
        finally:
            for check in checks:
                await check.close()

    methods: dict[str, Callable[[int, float], Awaitable[tuple[list[float], float, int]]]] = {
        name: functools.partial(http_load, port, requests) for name, port in ports.items()
    }
    methods[IN_PROCESS] = in_process
    methods[SANCTUM] = sanctum
    results: dict[str, dict[int, dict[str, float]]] = {}
    for concurrency in CONCURRENCY:
        gathered: dict[str, tuple[list[float], float, int]] = {
            name: ([], 0.0, 0)
            for name in methods  # samples, wall, errors
        }
        for _ in range(rounds):  # interleaved: drift on a shared machine hits all alike
            for name, method in methods.items():
                samples, wall, errors = run_async(
                    functools.partial(method, concurrency, seconds / rounds)
                )
                before = gathered[name]
                gathered[name] = (before[0] + samples, before[1] + wall, before[2] + errors)
        for name, (samples, wall, errors) in gathered.items():
            results.setdefault(name, {})[concurrency] = {
                "p50": float("nan"),
                "p99": float("nan"),
                **summary(samples),
                "rps": len(samples) / wall,
                "errors": errors,
            }
    return _report(results, seconds, workers, rounds)


def _report(
    results: dict[str, dict[int, dict[str, float]]], seconds: float, workers: int, rounds: int
) -> dict[str, Any]:
    rows = [
        (name, str(c), s["p50"] * 1000, s["p99"] * 1000, s["rps"], str(int(s["errors"])))
        for name, per in results.items()
        for c, s in per.items()
    ]
    print(table(rows, ["method", "conns", "p50 us", "p99 us", "req/s", "non-200"]))
    at8 = {name: per[8] for name, per in results.items()}
    ratios = {
        "gate_p50_ms_at_8": at8[GATE]["p50"],
        "gate_rps_over_sanctum_at_8": at8[GATE]["rps"] / at8[SANCTUM]["rps"],
        "gate_rps_over_uvicorn_at_8": at8[GATE]["rps"] / at8[UVICORN]["rps"],
    }
    targets = {
        "gate_p50_ms_at_8": ("<=", 1.0),
        "gate_rps_over_sanctum_at_8": (">=", 2.0),
        "gate_rps_over_uvicorn_at_8": (">=", 1.0),
    }
    for key, value in ratios.items():
        op, goal = targets[key]
        hit = value <= goal if op == "<=" else value >= goal
        print(f"{key:<32} {value:8.2f}   target {op} {goal:g}: {'hit' if hit else 'MISS'}")
    data = {
        "stats": {name: {str(c): s for c, s in per.items()} for name, per in results.items()},
        "ratios": ratios,
        "targets": {k: f"{op} {goal}" for k, (op, goal) in targets.items()},
        "workers": workers,
        # other work on the machine moves absolute figures; the ratios are what compare
        "load_average_1m_at_end": os.getloadavg()[0],
        "method": f"{seconds:.1f} s per method and concurrency in {rounds} interleaved rounds; "
        "HTTP methods: one uvloop client process, N keep-alive connections, "
        "GET /auth?ability=orders:read with a random token "
        f"among 200; servers with {workers} worker processes each; in-process and Sanctum: N "
        "concurrent asyncio tasks (Sanctum: N PostgreSQL connections); all on one 2-core machine",
    }
    save("gate", data, _plot(results))
    return data


def _plot(results: dict[str, dict[int, dict[str, float]]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, per in results.items():
        xs = list(per)
        left.plot(xs, [per[c]["p50"] for c in xs], marker="o", label=name)
        right.plot(xs, [per[c]["rps"] for c in xs], marker="o", label=name)
    left.axhline(1.0, color="grey", linestyle=":", label="target p50 at 8")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("keep-alive connections (concurrent tasks)")
    left.set_ylabel("p50 latency (ms, log)")
    left.legend(fontsize=7)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("keep-alive connections (concurrent tasks)")
    right.set_ylabel("requests/s (log)")
    fig.suptitle("tokensync gate /auth vs uvicorn, the in-process validator and the Sanctum way")
    return fig
