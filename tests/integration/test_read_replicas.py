"""Regions with read replicas: workers write to the primary, validators read a replica,
and a lagging replica looks exactly as stale as it is."""

from __future__ import annotations

import time

import pytest

from producer.receipts import wait_for_receipt
from shared.validator import Outcome, Validator
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for
from tests.replica_helpers import ReplicatedRedis

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
BUDGET_S = 2.0


@pytest.fixture
def region(replicated_region: Pipeline) -> Pipeline:
    """Region eu on a primary with one replica; a 2 s staleness budget, no skew allowance."""
    replicated_region.settings = replicated_region.settings.with_overrides(
        staleness_budget_s=BUDGET_S, clock_skew_allowance_s=0.0
    )
    return replicated_region


def _validator(pipeline: Pipeline, read_from: str) -> Validator:
    return Validator.from_settings(pipeline.settings, "eu", read_from=read_from)


def test_a_lagging_replica_answers_unavailable_past_the_budget_never_valid_for_a_revoked_token(
    region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    region.start_relay()
    region.start_worker("eu")
    region.wait_ready("eu")
    victim = region.store.issue(USER, 1, "victim")
    replica = _validator(region, "replica")
    primary = _validator(region, "primary")
    assert replica.client.connection_pool.connection_kwargs["port"] == redis_set.replicas[0].port
    wait_for(
        lambda: replica.validate(victim.plain_text_token).outcome is Outcome.VALID, 30, "valid"
    )

    redis_set.pause(redis_set.replicas[0])
    paused_at = time.time()
    mutation = region.store.revoke_token(victim.id)
    region.wait_applied(mutation.seq)
    assert primary.validate(victim.plain_text_token).outcome is Outcome.INVALID
    # within the budget the replica answers what it holds; past it, never valid
    past_budget = paused_at + BUDGET_S + 0.3
    answers = []
    while time.time() < past_budget + 1.5:
        result = replica.validate(victim.plain_text_token)
        if time.time() > past_budget:
            answers.append((result.outcome, result.reason))
        time.sleep(0.05)
    assert answers and {(Outcome.UNAVAILABLE, "stale")} == set(answers), answers

    # replication resumes: the replica catches up and denies the revoked token
    redis_set.client(redis_set.replicas[0]).replicaof("127.0.0.1", str(redis_set.primary.port))
    wait_for(
        lambda: replica.validate(victim.plain_text_token).outcome is Outcome.INVALID, 30, "denied"
    )
    # a near-cache hears invalidations where its validator reads: on the primary
    near = _validator(region, "replica")
    near.enable_near_cache()
    try:
        assert near.client.connection_pool.connection_kwargs["port"] == redis_set.primary.port
        assert near.validate(victim.plain_text_token).outcome is Outcome.INVALID
    finally:
        near.close()


def test_a_validator_whose_replica_is_down_answers_from_the_primary(
    region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    region.start_relay()
    region.start_worker("eu")
    region.wait_ready("eu")
    victim = region.store.issue(USER, 1, "victim")
    named = f"127.0.0.1:{redis_set.replicas[0].port}"
    replica = _validator(region, named)
    wait_for(
        lambda: replica.validate(victim.plain_text_token).outcome is Outcome.VALID, 30, "valid"
    )
    redis_set.kill(redis_set.replicas[0])
    mutation = region.store.revoke_token(victim.id)
    region.wait_applied(mutation.seq)
    assert replica.validate(victim.plain_text_token).outcome is Outcome.INVALID
    started = time.perf_counter()
    assert replica.validate(victim.plain_text_token).outcome is Outcome.INVALID
    assert time.perf_counter() - started < 0.5, "the dead replica was asked again at once"


def test_a_receipt_never_says_enforced_while_a_lagging_replica_still_answers_valid(
    region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    region.start_relay()
    region.start_worker("eu")
    region.wait_ready("eu")
    victim = region.store.issue(USER, 1, "victim")
    replica = _validator(region, "replica")
    wait_for(
        lambda: replica.validate(victim.plain_text_token).outcome is Outcome.VALID, 30, "valid"
    )
    redis_set.pause(redis_set.replicas[0])
    mutation = region.store.revoke_token(victim.id)
    region.wait_applied(mutation.seq)  # the primary holds it
    receipt = wait_for_receipt(region.settings, region.store, mutation.seq, timeout_s=1.0)
    still_valid = replica.validate(victim.plain_text_token).outcome is Outcome.VALID
    assert not (receipt.complete and still_valid), receipt.summary()
    assert "replica" in (receipt.regions[0].detail or ""), receipt.regions[0]

    redis_set.client(redis_set.replicas[0]).replicaof("127.0.0.1", str(redis_set.primary.port))
    receipt = wait_for_receipt(region.settings, region.store, mutation.seq, timeout_s=20)
    assert receipt.complete, receipt.summary()
    assert replica.validate(victim.plain_text_token).outcome is Outcome.INVALID
