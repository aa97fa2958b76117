"""A region's primary dies and a lagging replica is promoted: the region's Redis went back
in time. Never lost: no revoked token is accepted, not even before its worker noticed, and
once the worker re-applied the gap every revoked token is denied again."""

from __future__ import annotations

import time

import pytest

from shared.settings import Region
from shared.validator import Outcome, Validator
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for
from tests.replica_helpers import ReplicatedRedis, accepted

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_promoted_lagging_replica_never_accepts_a_token_revoked_before_the_failover(
    replicated_region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    replicated_region.start_relay()
    replicated_region.start_worker("eu")
    replicated_region.wait_ready("eu")
    tokens = [replicated_region.store.issue(USER, n, f"t{n}") for n in range(30)]
    early, late, kept = tokens[:10], tokens[10:20], tokens[20:]
    for token in early:
        seq = replicated_region.store.revoke_token(token.id).seq
    replicated_region.wait_applied(seq)
    redis_set.wait_in_sync()
    replica = redis_set.replicas[0]
    redis_set.pause(replica)  # the replica misses what follows
    for token in late:
        seq = replicated_region.store.revoke_token(token.id).seq
    replicated_region.wait_applied(seq)  # the primary applied them: receipts said enforced
    assert [] == accepted(replicated_region.validator("eu"), early + late)

    replicated_region.kill_worker("eu")
    redis_set.kill(redis_set.primary)
    redis_set.promote(replica)
    # the region now is the promoted replica (its heartbeats are seconds old, within budget)
    replicated_region.settings = replicated_region.settings.with_overrides(
        regions=(Region("eu", replica.url),)
    )
    validator = Validator.from_settings(replicated_region.settings, "eu")
    assert [] == accepted(validator, early + late), "a revoked token was accepted"
    replicated_region.start_worker("eu")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert [] == accepted(validator, early + late), "a revoked token was accepted"
        if len(accepted(validator, kept)) == len(kept):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(
            f"the region never recovered; {replicated_region.worker_log('eu')[-3000:]}"
        )
    wait_for(lambda: replicated_region.state("eu").ready, 5, "ready")
    outcomes = {validator.validate(t.plain_text_token).outcome for t in early + late}
    assert {Outcome.INVALID} == outcomes
    assert "cache_server_changed" in replicated_region.worker_log("eu")
