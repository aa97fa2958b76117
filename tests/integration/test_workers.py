"""Region workers on real Kafka and Redis: idempotence, kills, forgeries, bootstrap, cache loss."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from kafka import KafkaProducer

from producer.clock import utcnow
from producer.tokens import hash_token
from shared.events import (
    EpochEvent,
    Heartbeat,
    Keyring,
    TokenEvent,
    TokenOp,
    encode,
    principal_scope,
)
from shared.keys import RedisKeys, Topics
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import KEYRING, read_topic, wait_for
from workers.cache import RegionCache
from workers.handlers import RawRecord, prepare_batch

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def token_event(
    seq: int,
    h: str,
    op: TokenOp = TokenOp.ISSUED,
    owner: str = "1",
    abilities: tuple[str, ...] = ("*",),
    issued: int = 1000,
) -> TokenEvent:
    return TokenEvent(seq, op, h, seq, USER, owner, "n", abilities, issued, issued, None, issued)


def signed(event: TokenEvent | EpochEvent | Heartbeat, partition: int, offset: int) -> RawRecord:
    value = encode(event)
    return RawRecord(partition, offset, event.key, value, KEYRING.sign(event.key, value))


def dump(client: redis.Redis, keys: RedisKeys) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=keys.pattern):
        name = key.decode()
        kind = client.type(key).decode()
        if name in (keys.meta,):
            continue
        if kind == "hash":
            state[name] = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        else:
            state[name] = client.get(key)
    return state


async def _apply_all(url: str, batches: list[list[RawRecord]]) -> None:
    keys = RedisKeys()
    cache = RegionCache.from_url(url, keys)
    await cache.attach(3, {0: 0, 1: 0, 2: 0})
    now_ms = int(time.time() * 1000)
    for records in batches:
        batch = prepare_batch(records, KEYRING, keys)
        result = await cache.apply(batch, now_ms=now_ms)
        assert not result.lost
    await cache.close()


def test_every_record_twice_and_out_of_order_leaves_the_same_state_as_once_in_order(
    region_urls: dict[str, str],
) -> None:
    import asyncio

    hashes = [hash_token(f"token-{i}") for i in range(40)]
    records: list[RawRecord] = []
    seq = 0
    for i, h in enumerate(hashes):
        seq += 1
        records.append(
            signed(token_event(seq, h, owner=str(i % 4), abilities=("read",)), i % 3, seq)
        )
        if i % 3 == 0:
            seq += 1
            records.append(
                signed(token_event(seq, h, TokenOp.UPDATED, str(i % 4), ("write",)), i % 3, seq)
            )
        if i % 5 == 0:
            seq += 1
            records.append(signed(token_event(seq, h, TokenOp.REVOKED, str(i % 4)), i % 3, seq))
    for scope, before in (("global", 500), (principal_scope(USER, "2"), 700), ("global", 900)):
        seq += 1
        records.append(signed(EpochEvent(seq, scope, before, before), seq % 3, seq))
    for p in range(3):
        seq += 1
        records.append(signed(Heartbeat(p, 5000 + p, 0), p, seq))

    once = [records[i : i + 7] for i in range(0, len(records), 7)]
    shuffled = records * 2
    random.Random(7).shuffle(shuffled)
    twice = [shuffled[i : i + 11] for i in range(0, len(shuffled), 11)]

    in_order, messy = region_urls["eu"], region_urls["us"]
    asyncio.run(_apply_all(in_order, once))
    asyncio.run(_apply_all(messy, twice))
    a, b = redis.Redis.from_url(in_order), redis.Redis.from_url(messy)
    keys = RedisKeys()
    assert dump(a, keys) == dump(b, keys)
    assert b"900" == b.hget(keys.epochs, "global")
    a.close()
    b.close()


def issue_many(pipeline: Pipeline, count: int, owner_mod: int = 50) -> None:
    """Insert ``count`` tokens in one transaction with plain SQL (as a Laravel bulk insert)."""
    now = utcnow()
    stamp = time.time_ns()
    rows = [
        {
            "t": USER,
            "i": i % owner_mod,
            "n": f"bulk{i}",
            "h": hash_token(f"bulk-{i}-{stamp}"),
            "now": now,
        }
        for i in range(count)
    ]
    with pipeline.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, :i, :n, :h, '[\"*\"]', :now, :now)"
            ),
            rows,
        )


def token_keys(pipeline: Pipeline, region: str) -> int:
    client = pipeline.redis(region)
    try:
        return sum(1 for _ in client.scan_iter(match=pipeline.keys.token("*"), count=5000))
    finally:
        client.close()


def live_in_region(pipeline: Pipeline, region: str) -> int:
    client = pipeline.redis(region)
    try:
        live = 0
        for key in client.scan_iter(match=pipeline.keys.token("*"), count=5000):
            if client.hget(key, "s") == b"l":
                live += 1
        return live
    finally:
        client.close()


def test_a_region_added_after_10000_tokens_becomes_ready_with_exactly_the_live_tokens(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    issue_many(pipeline, 10_000)
    gone = pipeline.store.issue(USER, 7, "soon revoked")
    last = pipeline.store.revoke_token(gone.id)
    wait_for(lambda: pipeline.store.position(last.seq).offset is not None, 60, "all published")
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu", timeout_s=120)
    assert pipeline.store.count_live() == live_in_region(pipeline, "eu")
    assert 10_000 == pipeline.store.count_live()
    validator = pipeline.validator("eu")
    assert Outcome.INVALID == validator.validate(gone.plain_text_token).outcome
    validator.close()


def test_a_worker_killed_mid_batch_and_restarted_loses_nothing(pipeline: Pipeline) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    issued = [pipeline.store.issue(USER, i % 5, f"k{i}") for i in range(300)]
    for _ in range(3):
        issue_many(pipeline, 2000)
        time.sleep(random.uniform(0.05, 0.4))
        pipeline.kill_worker("eu")
        pipeline.start_worker("eu")
    revoked = [pipeline.store.revoke_token(t.id).seq for t in issued[:100]]
    epoch = pipeline.store.revoke_principal(USER, 4)
    pipeline.wait_applied(max([*revoked, epoch.seq]), timeout_s=120)
    assert pipeline.store.count_live() == live_in_region(pipeline, "eu") - epoch_hidden(pipeline)
    validator = pipeline.validator("eu")
    outcomes = [validator.validate(t.plain_text_token).outcome for t in issued]
    validator.close()
    expected = [Outcome.INVALID if i < 100 or i % 5 == 4 else Outcome.VALID for i in range(300)]
    assert expected == outcomes


def epoch_hidden(pipeline: Pipeline) -> int:
    """Live records an epoch revokes (their rows were deleted without per-token events)."""
    client = pipeline.redis("eu")
    try:
        before = int(client.hget(pipeline.keys.epochs, principal_scope(USER, 4)) or 0)
        hidden = 0
        for key in client.scan_iter(match=pipeline.keys.token("*"), count=5000):
            fields = client.hmget(key, "s", "tt", "ti", "ia")
            if fields[0] == b"l" and fields[2] == b"4" and int(fields[3] or 0) < before:
                hidden += 1
        return hidden
    finally:
        client.close()


def test_forged_records_change_nothing_and_land_in_the_dead_letter_topic(
    pipeline: Pipeline,
) -> None:
    from stack.process import free_port

    metrics_port = free_port()
    pipeline.start_relay()
    pipeline.start_worker("eu", None, "--metrics-port", str(metrics_port))
    pipeline.wait_ready("eu")
    victim = hash_token("forged-token-plain")
    forged = token_event(10**9, victim)
    value = encode(forged)
    wrong = Keyring({"test-1": b"not-the-real-key-not-the-real-key"}, "test-1").sign(
        forged.key, value
    )
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    producer.send(pipeline.topics.tokens, key=forged.key, value=value, headers=wrong)
    producer.send(pipeline.topics.tokens, key=forged.key, value=value)  # no signature at all
    producer.flush()
    producer.close()
    marker = pipeline.store.issue(USER, 1, "after the forgeries")
    pipeline.wait_applied(marker.seq)
    letters = read_topic(pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters, expect=2)
    reasons = sorted(dict(r.headers)["ts-dlq-reason"] for r in letters)
    assert [b"signature", b"signature"] == reasons
    client = pipeline.redis("eu")
    assert not client.exists(pipeline.keys.token(victim))
    client.close()
    validator = pipeline.validator("eu")
    assert Outcome.VALID == validator.validate(marker.plain_text_token).outcome
    validator.close()
    import httpx

    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert 'tokensync_worker_dead_letters_total{reason="signature",region="eu"} 2.0' in metrics
    assert 'tokensync_worker_applied_records_total{outcome="applied",region="eu"}' in metrics
    assert "tokensync_region_lag_records" in metrics and "tokensync_worker_batch_seconds" in metrics


def test_flushall_makes_a_region_unavailable_then_ready_again_while_others_answer(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    region_urls: dict[str, str],
    own_redis_url: str,
) -> None:
    regions = {"eu": own_redis_url, "us": region_urls["us"], "ap": region_urls["ap"]}
    pipeline = Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, regions)
    try:
        pipeline.start_all()
        kept = [pipeline.store.issue(USER, 1, f"kept{i}") for i in range(20)]
        gone = pipeline.store.issue(USER, 2, "revoked")
        last = pipeline.store.revoke_token(gone.id)
        pipeline.wait_applied(last.seq)
        validators = {name: pipeline.validator(name) for name in regions}

        client = redis.Redis.from_url(own_redis_url)
        client.flushall()
        client.close()
        assert Outcome.UNAVAILABLE == validators["eu"].validate(kept[0].plain_text_token).outcome
        for name in ("us", "ap"):
            assert Outcome.VALID == validators[name].validate(kept[0].plain_text_token).outcome

        seen_during_rebuild = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not pipeline.state("eu").ready:
            seen_during_rebuild.add(validators["eu"].validate(gone.plain_text_token).outcome)
            time.sleep(0.01)
        pipeline.wait_ready("eu")
        assert Outcome.VALID not in seen_during_rebuild
        assert [Outcome.VALID] * 20 == [
            validators["eu"].validate(t.plain_text_token).outcome for t in kept
        ]
        assert Outcome.INVALID == validators["eu"].validate(gone.plain_text_token).outcome
        for v in validators.values():
            v.close()
        assert "cache_lost" in pipeline.worker_log("eu")
    finally:
        pipeline.close()


def _assigned(pipeline: Pipeline, name: str) -> set[int]:
    """The partitions a worker process was last given (from its JSON log)."""
    latest: set[int] = set()
    for line in pipeline.worker_log(name).splitlines():
        if '"partitions_assigned"' in line:
            latest = set(json.loads(line)["partitions"])
    return latest


def test_two_workers_of_one_region_share_its_partitions_and_one_carries_on_alone(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu", name="eu-a")
    pipeline.wait_ready("eu")
    pipeline.start_worker("eu", name="eu-b")
    wait_for(
        lambda: (
            bool(_assigned(pipeline, "eu-b"))
            and not _assigned(pipeline, "eu-a") & _assigned(pipeline, "eu-b")
            and _assigned(pipeline, "eu-a") | _assigned(pipeline, "eu-b") == {0, 1, 2}
        ),
        90,
        "the region's partitions split between its two workers",
    )
    issued = [pipeline.store.issue(USER, i, f"k{i}") for i in range(60)]
    issue_many(pipeline, 3000)
    pipeline.wait_applied(pipeline.store.issue(USER, 0, "marker").seq, timeout_s=120)
    assert pipeline.store.count_live() == live_in_region(pipeline, "eu")

    pipeline.kill_worker("eu-a")  # eu-b takes its partitions over after the session timeout
    revoked = [pipeline.store.revoke_token(t.id).seq for t in issued[:30]]
    pipeline.wait_applied(max(revoked), timeout_s=120)
    assert _assigned(pipeline, "eu-b") == {0, 1, 2}
    assert pipeline.store.count_live() == live_in_region(pipeline, "eu")
    validator = pipeline.validator("eu")
    outcomes = [validator.validate(t.plain_text_token).outcome for t in issued]
    validator.close()
    assert outcomes == [Outcome.INVALID] * 30 + [Outcome.VALID] * 30
