"""A region's primary dies and a lagging replica is promoted: the region's Redis went back
in time. Never lost: no revoked token is accepted, not even before its worker noticed, and
once the worker re-applied the gap every revoked token is denied again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.records import IssuedToken
from shared.keys import Topics
from shared.settings import Region
from shared.validator import Outcome, Validator
from tests.harness import Pipeline, pipeline_context
from tests.kafka_helpers import wait_for
from tests.replica_helpers import ReplicatedRedis, replicated_redis

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    with replicated_redis(tmp_path / "redis") as servers:
        yield servers


@pytest.fixture
def region(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    redis_set: ReplicatedRedis,
) -> Iterator[Pipeline]:
    yield from pipeline_context(
        Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, {"eu": redis_set.spec})
    )


def _accepted(validator: Validator, tokens: list[IssuedToken]) -> list[int]:
    return [t.id for t in tokens if validator.validate(t.plain_text_token).outcome is Outcome.VALID]


def test_a_promoted_lagging_replica_never_accepts_a_token_revoked_before_the_failover(
    region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    region.start_relay()
    region.start_worker("eu")
    region.wait_ready("eu")
    tokens = [region.store.issue(USER, n, f"t{n}") for n in range(30)]
    early, late, kept = tokens[:10], tokens[10:20], tokens[20:]
    for token in early:
        seq = region.store.revoke_token(token.id).seq
    region.wait_applied(seq)
    redis_set.wait_in_sync()
    replica = redis_set.replicas[0]
    redis_set.pause(replica)  # the replica misses what follows
    for token in late:
        seq = region.store.revoke_token(token.id).seq
    region.wait_applied(seq)  # the primary applied them: receipts said enforced
    assert [] == _accepted(region.validator("eu"), early + late)

    region.kill_worker("eu")
    redis_set.kill(redis_set.primary)
    redis_set.promote(replica)
    # the region now is the promoted replica (its heartbeats are seconds old, within budget)
    region.settings = region.settings.with_overrides(regions=(Region("eu", replica.url),))
    validator = Validator.from_settings(region.settings, "eu")
    assert [] == _accepted(validator, early + late), "a revoked token was accepted"
    region.start_worker("eu")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert [] == _accepted(validator, early + late), "a revoked token was accepted"
        if len(_accepted(validator, kept)) == len(kept):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the region never recovered; {region.worker_log('eu')[-3000:]}")
    wait_for(lambda: region.state("eu").ready, 5, "ready")
    outcomes = {validator.validate(t.plain_text_token).outcome for t in early + late}
    assert {Outcome.INVALID} == outcomes
    assert "cache_server_changed" in region.worker_log("eu")
