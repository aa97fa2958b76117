"""Receipts mean what they say: every partition certified past the commit, nothing of the seq
in a region's dead letters, bounded waits that name unreachable regions."""

from __future__ import annotations

import dataclasses
import math
import socket
import time

import httpx
import pytest
import redis
import sqlalchemy as sa

from producer.api import create_app
from producer.kafka_io import KafkaAdmin
from producer.receipts import Receipt, RegionOutcome, wait_for_receipt
from producer.records import Mutation
from producer.relay import partition_for
from producer.store import TokenStore
from shared.errors import UsageError
from shared.events import ability_scope
from shared.keys import RedisKeys
from shared.settings import Region, Settings
from shared.validator import Outcome
from stack.process import free_port
from tests.harness import Pipeline
from tests.http_helpers import serving
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def published(pipeline: Pipeline, seq: int) -> dict[int, int]:
    """Wait until ``seq`` is published; the token topic's end offsets then."""
    wait_for(lambda: pipeline.store.position(seq).offset is not None, 30, f"seq {seq} published")
    admin = KafkaAdmin(pipeline.settings.kafka_bootstrap)
    try:
        return admin.end_offsets(pipeline.topics.tokens)
    finally:
        admin.close()


def revoked_and_published(pipeline: Pipeline) -> tuple[Mutation, dict[int, int]]:
    """Start the relay, revoke a fresh token, and wait until the revocation is published:
    the revocation and the token topic's end offsets then."""
    pipeline.start_relay()
    issued = pipeline.store.issue(USER, 1, "t")
    revocation = pipeline.store.revoke_token(issued.id)
    return revocation, published(pipeline, revocation.seq)


def receipt_of(
    pipeline: Pipeline, seq: int, regions: list[Region] | None, timeout_s: float
) -> Receipt:
    """``wait_for_receipt`` for ``seq`` in ``regions`` (None: every region of the settings)."""
    return wait_for_receipt(
        pipeline.settings, pipeline.store, seq, regions=regions, timeout_s=timeout_s
    )


def play_region(
    url: str,
    keys: RedisKeys,
    ends: dict[int, int],
    heartbeat_ms: int,
    *,
    skip: tuple[int, ...] = (),
) -> None:
    """Write what a worker would after applying every partition but ``skip`` up to ``ends``
    (offsets) with a heartbeat stamped ``heartbeat_ms``."""
    client = redis.Redis.from_url(url)
    try:
        client.hset(keys.meta, mapping={"partitions": len(ends), "ready": 1})
        for p, end in ends.items():
            if p not in skip:
                client.hset(keys.partitions, mapping={f"o:{p}": end, f"h:{p}": heartbeat_ms})
    finally:
        client.close()


def test_an_ability_revocation_is_not_enforced_while_the_tokens_partition_lags(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 7, "laravel", ["files:read"])
    token_partition = partition_for(token.token_hash.encode(), pipeline.settings.partitions)
    ability = next(
        a
        for a in (f"files:write{i}" for i in range(100))
        if partition_for(ability_scope(a).encode(), pipeline.settings.partitions) != token_partition
    )
    pipeline.wait_applied(token.seq)
    pipeline.stop_worker("eu")

    # Laravel grants the ability with plain SQL, then a responder revokes the ability.
    with pipeline.store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE personal_access_tokens SET abilities = :a WHERE id = :id"),
            {"a": f'["files:read","{ability}"]', "id": token.id},
        )
    revocation = pipeline.store.revoke_ability(ability)
    assert revocation.scope is not None and revocation.before_ms is not None
    ends = published(pipeline, revocation.seq)
    position = pipeline.store.position(revocation.seq)
    assert token_partition != position.partition

    # The region applies the epoch's partition (and every other) but not the token's.
    eu = pipeline.settings.region("eu").redis_url
    client = redis.Redis.from_url(eu)
    client.hset(pipeline.keys.epochs, revocation.scope, revocation.before_ms)
    client.close()
    play_region(eu, pipeline.keys, ends, int(time.time() * 1000) + 1, skip=(token_partition,))
    validator = pipeline.validator("eu", staleness_budget_s=3600.0)
    try:
        assert Outcome.VALID == validator.validate(token.plain_text_token).outcome
        receipt = receipt_of(pipeline, revocation.seq, [pipeline.settings.region("eu")], 1.0)
        assert not receipt.complete, receipt.summary()
        [eu_receipt] = receipt.regions
        assert RegionOutcome.PENDING == eu_receipt.state
        assert f"partition {token_partition}" in (eu_receipt.detail or "")

        pipeline.start_worker("eu")  # it catches up: the token's update, then heartbeats
        receipt = receipt_of(pipeline, revocation.seq, [pipeline.settings.region("eu")], 60.0)
        assert receipt.complete, receipt.summary()
        assert Outcome.INVALID == validator.validate(token.plain_text_token).outcome
    finally:
        validator.close()


def test_a_token_revocation_needs_only_its_own_record_not_the_other_partitions_heartbeats(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    revocation, ends = revoked_and_published(pipeline)
    position = pipeline.store.position(revocation.seq)
    assert position.partition is not None
    eu = pipeline.settings.region("eu")
    old_beat = position.recorded_at_ms - 10_000  # no partition certified past the commit
    play_region(eu.redis_url, pipeline.keys, ends, old_beat)
    receipt = receipt_of(pipeline, revocation.seq, [eu], 5)
    assert receipt.complete, receipt.summary()

    epoch = pipeline.store.revoke_principal(USER, 1)
    ends = published(pipeline, epoch.seq)
    play_region(eu.redis_url, pipeline.keys, ends, old_beat)
    receipt = receipt_of(pipeline, epoch.seq, [eu], 0.5)
    assert [RegionOutcome.PENDING] == [r.state for r in receipt.regions]  # an epoch waits


def test_a_receipt_never_counts_a_region_whose_dead_letters_hold_the_seq(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    revocation, ends = revoked_and_published(pipeline)
    position = pipeline.store.position(revocation.seq)
    assert position.partition is not None and position.offset is not None
    other = (position.partition + 1) % pipeline.settings.partitions
    beat = int(time.time() * 1000) + 1
    for region in pipeline.settings.regions:
        play_region(region.redis_url, pipeline.keys, ends, beat)
    dead = {
        # the seq itself was dead-lettered here
        "eu": {f"{position.partition}:{position.offset}": revocation.seq},
        # an unreadable record at or before the seq's offset in its partition: unknown content
        "us": {f"{position.partition}:{position.offset}": -1, f"{other}:0": 7},
        # unreadable records elsewhere, and another seq: they do not concern this receipt
        "ap": {f"{other}:0": -1, f"{position.partition}:{position.offset + 1}": -1, "0:0": 1},
    }
    for name, members in dead.items():
        client = redis.Redis.from_url(pipeline.settings.region(name).redis_url)
        client.zadd(pipeline.keys.dead_lettered, members)
        client.close()

    started = time.monotonic()
    receipt = receipt_of(pipeline, revocation.seq, None, 10)
    assert time.monotonic() - started < 5, "dead-lettered is final: no waiting for the deadline"
    states = {r.region: r.state for r in receipt.regions}
    assert {
        "ap": RegionOutcome.ENFORCED,
        "eu": RegionOutcome.DEAD_LETTERED,
        "us": RegionOutcome.DEAD_LETTERED,
    } == states
    assert not receipt.complete
    assert "dead_lettered" in receipt.summary()
    assert {"dead_lettered"} == {
        r["state"] for r in receipt.to_json()["regions"] if r["region"] != "ap"
    }


def test_a_wait_with_hung_and_refusing_regions_ends_at_its_deadline_and_names_them(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    revocation, ends = revoked_and_published(pipeline)
    eu = pipeline.settings.region("eu")
    play_region(eu.redis_url, pipeline.keys, ends, int(time.time() * 1000) + 1)
    hung = []  # listening sockets nobody answers on: a Redis that hangs
    for _ in range(3):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        hung.append(listener)
    regions = [
        eu,
        *(
            Region(f"hung{i}", f"redis://127.0.0.1:{s.getsockname()[1]}/0")
            for i, s in enumerate(hung)
        ),
        Region("refusing", f"redis://127.0.0.1:{free_port()}/0"),
    ]
    try:
        started = time.monotonic()
        receipt = receipt_of(pipeline, revocation.seq, regions, 1.0)
        elapsed = time.monotonic() - started
    finally:
        for listener in hung:
            listener.close()
    assert elapsed < 1.0 + 0.9, f"the wait took {elapsed:.2f} s for a 1 s deadline"
    states = {r.region: r.state for r in receipt.regions}
    assert {
        "eu": RegionOutcome.ENFORCED,
        "hung0": RegionOutcome.UNREACHABLE,
        "hung1": RegionOutcome.UNREACHABLE,
        "hung2": RegionOutcome.UNREACHABLE,
        "refusing": RegionOutcome.UNREACHABLE,
    } == states
    assert "unreachable" in receipt.summary()


def test_a_receipt_timeout_is_clamped_and_nan_or_infinity_is_refused(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    revocation, ends = revoked_and_published(pipeline)
    eu = pipeline.settings.region("eu")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(UsageError, match="finite"):
            receipt_of(pipeline, revocation.seq, None, bad)

    started = time.monotonic()
    receipt = receipt_of(pipeline, revocation.seq, [eu], -5)
    assert time.monotonic() - started < 1.5
    assert 0.0 == receipt.timeout_s and not receipt.complete
    assert [RegionOutcome.PENDING] == [r.state for r in receipt.regions]

    play_region(eu.redis_url, pipeline.keys, ends, int(time.time() * 1000) + 1)
    receipt = receipt_of(pipeline, revocation.seq, [eu], 1e9)
    assert receipt.complete and 60.0 == receipt.timeout_s


def test_the_api_refuses_an_infinite_receipt_timeout_at_once_and_commits_nothing(
    store: TokenStore, redis_url: str
) -> None:
    settings = Settings(regions=(Region("eu", redis_url),))  # a region nobody applies to
    admin = store.issue(
        "tokensync", 0, "admin", ["tokens:revoke", "revocations:mass"]
    ).plain_text_token
    headers = {"Authorization": f"Bearer {admin}"}
    with (
        serving(create_app(settings, store)) as url,
        httpx.Client(base_url=url, timeout=20) as http,
    ):
        answered = http.post(
            "/v1/revocations/principal",
            params={"wait": "true", "timeout": "-1"},
            json={"tokenable_type": USER, "tokenable_id": 3, "reason": "test"},
            headers=headers,
        )
        assert 200 == answered.status_code
        receipt = answered.json()["receipt"]
        assert not receipt["complete"] and 0.0 == receipt["timeout_s"]

        started = time.monotonic()
        refused = http.post(
            "/v1/revocations/all",
            params={"wait": "true", "timeout": "inf"},
            json={"before": "now", "reason": "test"},
            headers=headers,
        )
        assert time.monotonic() - started < 5
        assert 422 == refused.status_code
        assert "finite" in refused.json()["error"]
    with store.engine.connect() as conn:
        scopes = set(conn.execute(sa.text("SELECT scope FROM tokensync_epochs")).scalars())
    assert {f"principal:{USER}:3"} == scopes  # the refused call revoked nothing


def test_a_receipt_waits_for_a_lagging_near_cache_so_no_validator_answers_valid_after_it(
    pipeline: Pipeline,
) -> None:
    from tests.integration.test_near_cache import lagging

    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 8, "near", ["orders:read"])
    pipeline.wait_applied(token.seq)
    eu = pipeline.settings.region("eu").redis_url
    validator = pipeline.validator("eu", staleness_budget_s=30.0)
    with lagging(eu, 0.15) as slow:  # its listener hears the region 0.15 s late
        near = validator.enable_near_cache(client=slow, bound_s=5.0)
        try:
            # (each new connection through the lag costs a few round trips: give it time)
            wait_for(lambda: near.live, 30, "the lagging near-cache certified itself")
            validator.validate(token.plain_text_token)
            assert "near-cache" == validator.validate(token.plain_text_token).source
            revocation = pipeline.store.revoke_token(token.id)
            receipt = receipt_of(pipeline, revocation.seq, [pipeline.settings.region("eu")], 10.0)
            after = validator.validate(token.plain_text_token)
        finally:
            validator.close()
    assert receipt.complete, receipt.summary()
    assert Outcome.INVALID == after.outcome  # enforced means: no validator answers valid


def test_a_mass_revocation_receipt_completes_without_waiting_for_the_next_heartbeat(
    pipeline: Pipeline,
) -> None:
    # Periodic heartbeats 30 s apart: only a heartbeat sent right after the publish can
    # certify every partition past the epoch's commit within the wait below.
    pipeline.settings = dataclasses.replace(pipeline.settings, heartbeat_interval_s=30.0)
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 9, "mass", ["orders:read"])
    pipeline.wait_applied(token.seq)
    revocation = pipeline.store.revoke_principal(USER, 9)
    receipt = receipt_of(pipeline, revocation.seq, [pipeline.settings.region("eu")], 5.0)
    assert receipt.complete, receipt.summary()
