"""Per-token bulk revocation: 100,000 rows deleted in one statement (100,000 events),
until every region enforces all of them. Also the relay's throughput."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from bench.env import BenchEnv, bench_env
from bench.report import save, summary, table
from producer.clock import utcnow
from producer.tokens import hash_token

__all__ = ["run"]


def _issue(env: BenchEnv, count: int) -> None:
    assert env.store is not None
    now = utcnow()
    rows = [
        {"t": "App\\Models\\User", "i": i, "h": hash_token(f"bulk-{i}-{time.time_ns()}"), "n": now}
        for i in range(count)
    ]
    with env.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, "
                "token, abilities, created_at, updated_at) "
                "VALUES (:t, :i, 'bulk', :h, '[\"*\"]', :n, :n)"
            ),
            rows,
        )


def _drained(env: BenchEnv) -> bool:
    assert env.store is not None
    with env.store.engine.connect() as conn:
        return not conn.execute(
            sa.text("SELECT 1 FROM tokensync_outbox WHERE published_at_ms IS NULL LIMIT 1")
        ).first()


def run(count: int = 100_000) -> dict[str, Any]:
    """Run the scenario; print a table; write JSON and PNG; return the data."""
    with bench_env(("eu", "us", "ap"), postgres=True) as env:
        store = env.open_store(env.settings.database_url)
        env.start_relay()
        for region in env.settings.regions:
            env.start_worker(region.name)
        _issue(env, count)
        env.wait(lambda: _drained(env), 300, "issued tokens published")
        ends = env.end_offsets()
        for region in env.settings.regions:
            env.wait_caught_up(region.name, ends, 300, "issued tokens applied")

        began = time.monotonic()
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM personal_access_tokens"))
        committed = time.monotonic()
        env.wait(lambda: _drained(env), 300, "revocations published")
        published = time.monotonic()
        ends = env.end_offsets()
        done: dict[str, float] = {}
        while len(done) < len(env.settings.regions) and time.monotonic() - committed < 300:
            for region in env.settings.regions:
                if region.name not in done and env.caught_up(region.name, ends):
                    done[region.name] = time.monotonic() - committed
            time.sleep(0.01)
        lag = env.relay_lag_ms(revocations_only=True)
    publish_s = published - committed
    enforced_s = max(done.values()) if done else float("nan")
    rows = [
        ("delete (one statement)", committed - began),
        ("relay published all", publish_s),
        *[(f"enforced in {name}", secs) for name, secs in done.items()],
    ]
    print(table(rows, ["step", "seconds after commit"]))
    print(
        f"relay throughput {count / publish_s:,.0f} records/s; enforced everywhere after "
        f"{enforced_s:.2f} s (target <= 5 s)"
    )
    data = {
        "tokens": count,
        "delete_s": committed - began,
        "relay_publish_s": publish_s,
        "relay_records_per_s": count / publish_s,
        "enforced_s": done,
        "enforced_everywhere_s": enforced_s,
        "relay_commit_to_ack_ms": summary(lag),
        "target_s": 5,
    }
    save("bulk", data, _plot(done, publish_s))
    return data


def _plot(done: dict[str, float], publish_s: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = ["relay published", *done]
    values = [publish_s, *done.values()]
    ax.barh(names, values, color=["tab:orange", *["tab:blue"] * len(done)])
    ax.axvline(5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds after the DELETE committed (dashed: 5 s target)")
    ax.set_title("100,000 per-token revocations")
    return fig
