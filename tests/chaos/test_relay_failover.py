"""Relay failover: two ``tokensync relay`` processes on one store, one holding the relay
lease. SIGKILL the active one during 5,000 revocations, or SIGSTOP it for 10 s and let
it resume: nothing is lost, no region holds an older version than the store's, receipts
complete, and what the resumed relay still sent after the take-over is fenced."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.receipts import wait_for_receipt
from producer.relay_lease import LeaseView, RelayLease
from shared.events import FENCE_HEADER, fence_of
from shared.keys import Topics
from shared.tokenformat import hash_token
from shared.validator import Outcome
from tests.harness import Pipeline, pipeline_context
from tests.kafka_helpers import read_topic, wait_for

pytestmark = pytest.mark.chaos
USER = "App\\Models\\User"
REGIONS = ("eu", "us")


@pytest.fixture
def two_regions(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    region_urls: dict[str, str],
) -> Iterator[Pipeline]:
    yield from pipeline_context(
        Pipeline(
            tmp_path, kafka_bootstrap, sqlite_url, topics, {r: region_urls[r] for r in REGIONS}
        )
    )


def lease(pipeline: Pipeline) -> LeaseView:
    return RelayLease(pipeline.store.engine, "observer").view()


def holder_pid(view: LeaseView) -> int | None:
    parts = view.holder.split(":")
    return int(parts[-2]) if len(parts) >= 3 and not view.expired else None


def start_relays(pipeline: Pipeline) -> tuple[int, int]:
    """relay-a (waits until it holds the lease), then relay-b (a standby)."""
    a = pipeline.built.start("relay-a", ["relay"]).pid
    wait_for(lambda: holder_pid(lease(pipeline)) == a, 60, "relay-a holds the lease")
    b = pipeline.built.start("relay-b", ["relay"]).pid
    wait_for(lambda: "relay_standby" in log_of(pipeline, "relay-b"), 60, "relay-b stands by")
    return a, b


def log_of(pipeline: Pipeline, name: str) -> str:
    path = pipeline.built.log_path(name)
    return path.read_text(errors="replace") if path.exists() else ""


def log_events(pipeline: Pipeline, name: str, event: str) -> list[dict[str, object]]:
    """The JSON log lines of child ``name`` of one event."""
    out = []
    for line in log_of(pipeline, name).splitlines():
        if event in line and line.startswith("{"):
            data = orjson.loads(line)
            if data.get("event") == event:
                out.append(data)
    return out


def bulk_issue(pipeline: Pipeline, count: int) -> list[tuple[int, str]]:
    """``count`` tokens inserted in one statement: (id, hash) of each."""
    now = utcnow()
    hashes = [hash_token(f"failover-{i}-{time.time_ns()}") for i in range(count)]
    with pipeline.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, :i, 'bulk', :h, '[\"*\"]', :n, :n)"
            ),
            [{"t": USER, "i": i, "h": h, "n": now} for i, h in enumerate(hashes)],
        )
        rows = conn.execute(
            sa.text("SELECT id, token FROM personal_access_tokens WHERE name = 'bulk'")
        ).all()
    return sorted((int(r.id), str(r.token)) for r in rows)


class Staleness:
    """Samples every region's freshness (age of its oldest partition heartbeat)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.worst: dict[str, float] = dict.fromkeys(REGIONS, 0.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for region in REGIONS:
                age = self.pipeline.state(region).freshness_s()
                if age is not None:
                    self.worst[region] = max(self.worst[region], age)

    def close(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join(10)
        return self.worst


def check_regions(pipeline: Pipeline, revoked: list[tuple[int, str, int]], live: str) -> None:
    """Every revoked token is denied in every region, at exactly the store's version."""
    for region in REGIONS:
        client = pipeline.redis(region)
        pipe = client.pipeline(transaction=False)
        for _, token_hash, _ in revoked:
            pipe.hmget(pipeline.keys.token(token_hash), "v", "s")
        found = pipe.execute()
        client.close()
        expected = [(str(seq).encode(), b"r") for _, _, seq in revoked]
        wrong = [
            (t[0], e, tuple(f))
            for t, e, f in zip(revoked, expected, found, strict=True)
            if tuple(f) != e
        ]
        assert [] == wrong[:5], f"{region}: {len(wrong)} tokens not at the store's version"
        validator = pipeline.validator(region)
        assert Outcome.VALID == validator.validate(live).outcome
        validator.close()


def receipts_complete(pipeline: Pipeline, seqs: list[int]) -> None:
    picks = sorted({seqs[0], seqs[len(seqs) // 3], seqs[len(seqs) // 2], seqs[-1]})
    receipts = [wait_for_receipt(pipeline.settings, pipeline.store, s, timeout_s=60) for s in picks]
    assert all(r.complete for r in receipts), [r.summary() for r in receipts]


def test_sigkill_of_the_active_relay_during_5000_revocations_loses_none_and_the_standby_takes_over(
    two_regions: Pipeline,
) -> None:
    pipeline = two_regions
    _, b = start_relays(pipeline)
    for region in REGIONS:
        pipeline.start_worker(region)
    for region in REGIONS:
        pipeline.wait_ready(region)
    tokens = bulk_issue(pipeline, 5000)
    marker = pipeline.store.issue(USER, 1, "marker")
    pipeline.wait_applied(marker.seq, timeout_s=120)
    before = lease(pipeline)
    staleness = Staleness(pipeline)
    revoked: list[tuple[int, str, int]] = []
    killed_at = 0.0
    for i, (token_id, token_hash) in enumerate(tokens):
        if i == 1500:
            killed_at = time.time()
            pipeline.built.kill("relay-a")  # SIGKILL, reaped
        revoked.append((token_id, token_hash, pipeline.store.revoke_token(token_id).seq))
    wait_for(lambda: holder_pid(lease(pipeline)) == b, 30, "relay-b holds the lease")
    pipeline.wait_applied(revoked[-1][2], timeout_s=120)
    worst = staleness.close()
    after = lease(pipeline)
    assert before.epoch < after.epoch  # the next epoch (plus one, or the store clock)
    [active] = log_events(pipeline, "relay-b", "relay_active")
    assert after.epoch == active["epoch"]
    check_regions(pipeline, revoked, marker.plain_text_token)
    receipts_complete(pipeline, [seq for _, _, seq in revoked])
    took_over = dt.datetime.fromisoformat(str(active["timestamp"])).timestamp() - killed_at
    print(f"\nSIGKILL: relay-b active {took_over:.2f} s after; worst staleness {worst} s")
    budget = pipeline.settings.staleness_budget_s
    assert all(age < budget for age in worst.values()), (worst, budget)


def test_a_relay_paused_for_10_s_then_resumed_is_fenced_and_becomes_a_standby(
    two_regions: Pipeline,
) -> None:
    pipeline = two_regions
    a, b = start_relays(pipeline)
    for region in REGIONS:
        pipeline.start_worker(region)
    for region in REGIONS:
        pipeline.wait_ready(region)
    tokens = bulk_issue(pipeline, 3000)
    marker = pipeline.store.issue(USER, 1, "marker")
    pipeline.wait_applied(marker.seq, timeout_s=120)
    epoch = lease(pipeline).epoch
    revoked: list[tuple[int, str, int]] = []
    resumed = threading.Event()

    def pause() -> None:
        os.kill(a, signal.SIGSTOP)
        time.sleep(10)
        os.kill(a, signal.SIGCONT)
        resumed.set()

    pauser = threading.Timer(0.0, pause)
    for i, (token_id, token_hash) in enumerate(tokens):
        if i == 300:
            pauser.start()
        revoked.append((token_id, token_hash, pipeline.store.revoke_token(token_id).seq))
        if i > 300 and not resumed.is_set():
            time.sleep(0.003)  # keep revocations flowing through the pause
    assert resumed.wait(30)
    wait_for(
        lambda: "relay_standby" in log_of(pipeline, "relay-a").split("relay_active", 1)[-1],
        30,
        "the resumed relay-a stands by",
    )
    assert holder_pid(lease(pipeline)) == b
    new_epoch = lease(pipeline).epoch
    assert epoch < new_epoch
    assert pipeline.built.popen("relay-a").poll() is None  # alive, a standby
    last = pipeline.store.issue(USER, 2, "after the pause")
    pipeline.wait_applied(last.seq, timeout_s=120)
    check_regions(pipeline, revoked, last.plain_text_token)
    receipts_complete(pipeline, [seq for _, _, seq in revoked])
    # After the first record of the new epoch in a partition, a record of the old epoch is
    # fenced: every region dead-lettered it (nothing of it was applied).
    records = read_topic(pipeline.settings.kafka_bootstrap, pipeline.topics.tokens)
    first_new: dict[int, int] = {}
    for r in records:
        if fence_of(r.headers) == new_epoch:
            first_new.setdefault(r.partition, r.offset)
    assert len(first_new) == pipeline.settings.partitions
    late = {
        f"{pipeline.topics.tokens}:{r.partition}:{r.offset}"
        for r in records
        if (fence_of(r.headers) or 0) <= epoch and r.offset > first_new[r.partition]
    }
    letters = read_topic(pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters)
    fenced: dict[str, set[str]] = {region: set() for region in REGIONS}
    for letter in letters:
        headers = dict(letter.headers)
        if headers.get("ts-dlq-reason") == b"fenced":
            fenced[headers["ts-dlq-region"].decode()].add(headers["ts-dlq-source"].decode())
    assert all(headers_fence(r.headers) for r in records if r.offset >= first_new[r.partition])
    print(f"\nSIGSTOP 10 s: the resumed relay sent {len(late)} records after the take-over")
    for region in REGIONS:
        assert late == fenced[region], region


def headers_fence(headers: list[tuple[str, bytes]]) -> bool:
    """Whether a record carries a fencing epoch."""
    return any(name == FENCE_HEADER for name, _ in headers)
