"""A heartbeat stamped T certifies that every change committed before T was published,
stamped by the store's clock, never the relay's."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from producer.clock import db_now_ms, utcnow
from producer.outbox import unpublished_count
from producer.relay import Relay, RelayOptions
from producer.store import TokenStore
from producer.wakeup import waker_for
from shared.events import Heartbeat, TokenEvent, encode
from shared.keys import Topics
from shared.outcomes import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import KEYRING, kafka_connector, read_topic, running_relay, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
BUDGET_MS = 1000


def backlog(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        return unpublished_count(conn)


def test_a_relay_whose_clock_runs_an_hour_ahead_stamps_heartbeats_with_the_store_clock(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    waker = waker_for(store.engine)
    relay = Relay(
        store.engine,
        kafka_connector(kafka_bootstrap, topics),
        KEYRING,
        waker,
        clock=lambda: time.time() + 3600,
    )
    try:
        relay.heartbeat()
    finally:
        relay.close()
        waker.close()
    with store.engine.connect() as conn:
        store_now = db_now_ms(conn)
    beats = [r.event() for r in read_topic(kafka_bootstrap, topics.tokens, expect=3)]
    assert 3 == len(beats)
    assert all(isinstance(b, Heartbeat) and b.at_ms <= store_now for b in beats), [
        b.at_ms - store_now for b in beats if isinstance(b, Heartbeat)
    ]


def test_heartbeats_while_a_5000_row_backlog_drains_never_claim_freshness(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    now = utcnow()
    rows = [
        {"t": USER, "i": i, "h": f"{i:064x}", "n": now} for i in range(5000)
    ]  # one bulk revocation's worth of committed changes
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, :i, 'bulk', :h, '[\"*\"]', :n, :n)"
            ),
            rows,
        )
    time.sleep(BUDGET_MS / 1000 + 0.2)  # the backlog is older than the staleness budget
    options = RelayOptions(batch_size=500, heartbeat_interval_s=0.0)
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics), options=options):
        wait_for(lambda: backlog(store) == 0, timeout_s=60, what="backlog drained")
    with store.engine.connect() as conn:
        store_now = db_now_ms(conn)

    records = read_topic(kafka_bootstrap, topics.tokens, expect=5000)
    by_partition: dict[int, list[tuple[int, object]]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append((record.offset, record.event()))
    beats_during_drain = 0
    for entries in by_partition.values():
        entries.sort(key=lambda entry: entry[0])
        for i, (_, event) in enumerate(entries):
            if not isinstance(event, Heartbeat):
                continue
            assert event.at_ms <= store_now
            later = [e.at_ms for _, e in entries[i + 1 :] if isinstance(e, TokenEvent)]
            if later:
                beats_during_drain += 1
                # a change committed before the heartbeat's time came after it: a region
                # that applied this heartbeat would look fresh while missing it
                assert event.at_ms <= min(later), (event.at_ms - min(later), "ms too fresh")
    assert beats_during_drain >= 3, "heartbeats were sent while the backlog drained"


def test_a_region_never_answers_valid_while_a_backlog_older_than_its_budget_drains(
    pipeline: Pipeline,
) -> None:
    store = pipeline.store
    connect = kafka_connector(
        pipeline.settings.kafka_bootstrap, pipeline.topics, pipeline.settings.partitions
    )
    fast = RelayOptions(heartbeat_interval_s=0.1)
    with running_relay(store.engine, connect, options=fast):
        pipeline.start_worker("eu")
        pipeline.wait_ready("eu")
        token = store.issue(USER, 1, "watched")
        pipeline.wait_applied(token.seq)
        validator = pipeline.validator("eu", staleness_budget_s=BUDGET_MS / 1000)
        wait_for(
            lambda: validator.validate(token.plain_text_token).outcome is Outcome.VALID,
            what="the region answers valid",
        )
    now = utcnow()
    with store.engine.begin() as conn:  # committed while the relay is down: a backlog
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, :i, 'bulk', :h, '[\"*\"]', :n, :n)"
            ),
            [{"t": USER, "i": i, "h": f"{i:064x}", "n": now} for i in range(5000)],
        )
    policy = validator.policy  # stale = older than the budget plus the skew allowance
    time.sleep(policy.staleness_budget_s + policy.clock_skew_allowance_s + 0.3)

    samples: list[tuple[Outcome, int]] = []
    slow = RelayOptions(batch_size=250, heartbeat_interval_s=0.0)
    with running_relay(store.engine, connect, options=slow):
        while True:
            outcome = validator.validate(token.plain_text_token).outcome
            left = backlog(store)  # rows older than the budget still unpublished
            samples.append((outcome, left))
            if left == 0:
                break
        wait_for(
            lambda: validator.validate(token.plain_text_token).outcome is Outcome.VALID,
            what="fresh again once drained",
        )
    validator.close()
    during = [outcome for outcome, left in samples if left > 0]
    assert len(during) >= 5, "the region was watched while the backlog drained"
    assert [] == [o for o in during if o is Outcome.VALID]


def test_a_region_answers_again_soon_after_a_store_clock_step_ahead_is_corrected(
    pipeline: Pipeline,
) -> None:
    """The relay stamps heartbeats with the store's clock. One round stamped while that
    clock read an hour ahead (an NTP step, a VM resumed with a wrong clock) must not pin
    the region's freshness in the future: the worker leaves heartbeats stamped beyond the
    skew allowance ahead of its own clock unapplied (counted, logged), so the correct
    heartbeats that follow keep the region answering. The bogus round is produced as the
    relay would (same key, same signing)."""
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 1, "everyday")
    pipeline.wait_applied(token.seq)
    validator = pipeline.validator("eu")
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    try:
        assert Outcome.VALID == validator.validate(token.plain_text_token).outcome
        ahead = int(time.time() * 1000) + 3600 * 1000
        sent = []
        for p in range(pipeline.settings.partitions):
            beat = Heartbeat(p, ahead, token.seq)
            value = encode(beat)
            sent.append(
                producer.send(
                    pipeline.topics.tokens,
                    key=beat.key,
                    value=value,
                    headers=KEYRING.sign(beat.key, value),
                    partition=p,
                )
            )
        producer.flush()
        offsets = {f.get(timeout=10).partition: f.get(timeout=10).offset for f in sent}
        wait_for(
            lambda: all(pipeline.state("eu").has_applied(p, o) for p, o in offsets.items()),
            30,
            "the worker consumed the heartbeats from the future",
        )
        # the clock is right again: the relay keeps stamping correct heartbeats every 0.2 s
        deadline = time.monotonic() + 15
        result = validator.validate(token.plain_text_token)
        while time.monotonic() < deadline and result.outcome is not Outcome.VALID:
            time.sleep(0.2)
            result = validator.validate(token.plain_text_token)
        assert result.outcome is Outcome.VALID, (
            f"15 s after the store clock was corrected the region is still "
            f"{result.outcome.value} ({result.reason}); it stays so for an hour"
        )
        assert "heartbeat_ahead_ignored" in pipeline.worker_log("eu")
    finally:
        producer.close()
        validator.close()
