"""Faults that break such systems; every test asserts the invariant, not just survival:
nothing lost, and no revoked token ever accepted."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from producer.records import IssuedToken
from shared.events import Keyring, TokenEvent, TokenOp, encode
from shared.keys import Topics
from shared.validator import Outcome, Policy, Validator
from tests.harness import Pipeline
from tests.kafka_helpers import KEYRING, read_topic
from tests.region_helpers import RegionFixture, now_ms
from tests.servers import DedicatedKafka

pytestmark = pytest.mark.chaos
USER = "App\\Models\\User"


class Watch:
    """Validators polling revoked tokens in every region: any 'valid' after the region
    confirmed the revocation is a false accept."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.revoked: list[tuple[IssuedToken, int]] = []  # token, seq
        self.false_accepts: list[str] = []
        self.checks = 0
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True)
            for name in set(pipeline.worker_regions.values())
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, region: str) -> None:
        validator = self.pipeline.validator(region)
        while not self.stop.is_set():
            for token, seq in list(self.revoked):
                position = self.pipeline.store.position(seq)
                if position.offset is None:
                    continue
                if not self.pipeline.state(region).has_applied(
                    position.partition or 0, position.offset
                ):
                    continue
                self.checks += 1
                if validator.validate(token.plain_text_token).outcome is Outcome.VALID:
                    self.false_accepts.append(f"{region}: token {token.id} valid after enforcement")
            time.sleep(0.01)
        validator.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def test_hostile_records_are_dead_lettered_and_the_stream_goes_on(pipeline: Pipeline) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    event = TokenEvent(10**9, TokenOp.ISSUED, "c" * 64, 1, USER, "1", "evil", ("*",), 1, 1, None, 1)
    value = encode(event)
    good = KEYRING.sign(event.key, value)
    other = Keyring({"test-1": b"x" * 32}, "test-1").sign(event.key, value)
    unknown = Keyring({"nobody": b"y" * 32}, "nobody").sign(event.key, value)
    v2 = value.replace(b'"v":1', b'"v":2')
    big = b'{"v":1,"pad":"' + b"x" * 70_000 + b'"}'
    hostile = {
        "forged signature": (value, other),
        "tampered payload": (value.replace(b'"evil"', b'"nice"'), good),
        "unknown key id": (value, unknown),
        "oversized": (big, KEYRING.sign(event.key, big)),
        "wrong schema version": (v2, KEYRING.sign(event.key, v2)),
        "not JSON": (b"\x00\x01binary", KEYRING.sign(event.key, b"\x00\x01binary")),
        "empty": (b"", KEYRING.sign(event.key, b"")),
    }
    producer = KafkaProducer(
        bootstrap_servers=pipeline.settings.kafka_bootstrap, max_request_size=2 << 20
    )
    for payload, headers in hostile.values():
        producer.send(
            pipeline.topics.tokens, key=event.key, value=payload, headers=headers, partition=0
        )
    producer.flush()
    producer.close()
    after = pipeline.store.issue(USER, 2, "after the hostile records")
    pipeline.wait_applied(after.seq)
    letters = read_topic(
        pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters, expect=len(hostile)
    )
    assert len(hostile) == len(letters)
    client = pipeline.redis("eu")
    # nothing hostile grants; a signed record that names the token but cannot be applied as a
    # grant (the wrong schema version) denies it (invariant 8)
    assert client.hget(pipeline.keys.token("c" * 64), "s") in (None, b"r")
    client.close()
    validator = pipeline.validator("eu")
    assert Outcome.VALID == validator.validate(after.plain_text_token).outcome
    validator.close()


def test_replaying_partitions_from_offset_0_into_a_live_region_changes_nothing(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    tokens = [pipeline.store.issue(USER, i % 7, f"t{i}") for i in range(200)]
    for t in tokens[:50]:
        pipeline.store.revoke_token(t.id)
    last = pipeline.store.revoke_principal(USER, 3)
    pipeline.wait_applied(last.seq)

    def snapshot() -> dict[str, object]:
        client = pipeline.redis("eu")
        try:
            state = {}
            for key in client.scan_iter(match=pipeline.keys.token("*")):
                state[key.decode()] = client.hgetall(key)
            state["epochs"] = client.hgetall(pipeline.keys.epochs)
            return state
        finally:
            client.close()

    before = snapshot()
    pipeline.stop_worker("eu")
    client = pipeline.redis("eu")
    offsets = [k for k in client.hkeys(pipeline.keys.partitions) if k.startswith(b"o:")]
    client.hdel(pipeline.keys.partitions, *offsets)  # the region forgets what it applied
    client.close()
    pipeline.start_worker("eu")
    marker = pipeline.store.issue(USER, 99, "marker")
    pipeline.wait_applied(marker.seq, timeout_s=120)
    after = snapshot()
    after.pop(pipeline.keys.token(marker.token_hash))
    assert before == after


def test_sigkill_of_relay_and_workers_under_load_loses_nothing_and_accepts_no_revoked_token(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay_process()
    for region in ("eu", "us"):
        pipeline.start_worker(region)
    for region in ("eu", "us"):
        pipeline.wait_ready(region)
    watch = Watch(pipeline)
    rng = random.Random(3)
    live: list[IssuedToken] = []
    try:
        for round_ in range(6):
            for _ in range(40):
                live.append(pipeline.store.issue(USER, rng.randint(1, 20), "load"))
                if len(live) > 10 and rng.random() < 0.5:
                    victim = live.pop(rng.randrange(len(live)))
                    watch.revoked.append((victim, pipeline.store.revoke_token(victim.id).seq))
            time.sleep(rng.uniform(0.05, 0.3))
            if round_ % 2 == 0:
                pipeline.kill_relay_process()
                time.sleep(0.2)
                pipeline.start_relay_process()
            else:
                region = rng.choice(["eu", "us"])
                pipeline.kill_worker(region)
                pipeline.start_worker(region)
        last = pipeline.store.issue(USER, 1, "last")
        pipeline.wait_applied(last.seq, timeout_s=120)
    finally:
        watch.close()
    assert [] == watch.false_accepts
    assert watch.checks > 0
    for region in ("eu", "us"):
        validator = pipeline.validator(region)
        assert {Outcome.INVALID} == {
            validator.validate(t.plain_text_token).outcome for t, _ in watch.revoked
        }
        assert {Outcome.VALID} == {validator.validate(t.plain_text_token).outcome for t in live}
        validator.close()


def test_a_broker_outage_during_5000_revocations_then_every_receipt_completes(
    tmp_path: Path,
    dedicated_kafka: DedicatedKafka,
    sqlite_url: str,
    topics: Topics,
    region_urls: dict[str, str],
) -> None:
    from producer.receipts import wait_for_receipt

    pipeline = Pipeline(
        tmp_path,
        dedicated_kafka.bootstrap,
        sqlite_url,
        topics,
        {"eu": region_urls["eu"], "us": region_urls["us"]},
    )
    try:
        pipeline.start_relay()
        for region in ("eu", "us"):
            pipeline.start_worker(region)
        for region in ("eu", "us"):
            pipeline.wait_ready(region)
        tokens = _bulk_issue(pipeline, 5000)
        last_issue = pipeline.store.issue(USER, 1, "marker")
        pipeline.wait_applied(last_issue.seq, timeout_s=120)
        seqs = []
        for i, token_id in enumerate(tokens):
            if i == 1000:
                dedicated_kafka.stop()
            if i == 3500:
                dedicated_kafka.start()
            seqs.append(pipeline.store.revoke_token(token_id).seq)
        pipeline.wait_applied(max(seqs), timeout_s=240)
        receipts = [
            wait_for_receipt(pipeline.settings, pipeline.store, s, timeout_s=30)
            for s in (seqs[0], seqs[999], seqs[1000], seqs[2000], seqs[-1])
        ]
        assert all(r.complete for r in receipts), [r.summary() for r in receipts]
        position_missing = [s for s in seqs if pipeline.store.position(s).offset is None]
        assert [] == position_missing
        for region in ("eu", "us"):
            client = pipeline.redis(region)
            live = sum(
                1
                for k in client.scan_iter(match=pipeline.keys.token("*"), count=5000)
                if client.hget(k, "s") == b"l"
            )
            client.close()
            assert 1 == live, f"{region}: only the marker token is left live"
    finally:
        pipeline.close()


def _bulk_issue(pipeline: Pipeline, count: int) -> list[int]:
    import sqlalchemy as sa

    from producer.clock import utcnow
    from shared.tokenformat import hash_token

    now = utcnow()
    with pipeline.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, :i, 'bulk', :h, '[\"*\"]', :n, :n)"
            ),
            [
                {"t": USER, "i": i, "h": hash_token(f"outage-{i}-{time.time_ns()}"), "n": now}
                for i in range(count)
            ],
        )
        return list(
            conn.execute(
                sa.text("SELECT id FROM personal_access_tokens WHERE name = 'bulk' ORDER BY id")
            ).scalars()
        )


def test_clock_skew_within_the_allowance_is_tolerated_and_beyond_it_the_region_is_stale(
    redis_url: str,
) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    plain = "k" * 40
    t = now_ms()
    region.token(plain, owner="5", issued_at=t - 10_000)
    from shared.events import principal_scope

    region.epoch(principal_scope(USER, "5"), t - 5_000)
    policy = Policy(staleness_budget_s=2.0, clock_skew_allowance_s=1.0)
    for skew in (-0.9, 0.0, 0.9):
        skewed = Validator(
            redis.Redis.from_url(redis_url), policy=policy, clock=lambda s=skew: time.time() + s
        )
        result = skewed.validate(plain)
        assert ("invalid", "revoked") == (result.outcome.value, result.reason), skew
        skewed.close()
    ahead = Validator(redis.Redis.from_url(redis_url), policy=policy, clock=lambda: time.time() + 4)
    assert ("unavailable", "stale") == (
        ahead.validate(plain).outcome.value,
        ahead.validate(plain).reason,
    )
    ahead.close()
