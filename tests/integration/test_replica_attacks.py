"""Attacks on a region served by a primary and read replicas: an unlucky operator's
setup, a failover, and the receipts (issue 17 item 4, review). Each test failed on the
code before its fix."""

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


def test_a_validator_whose_redis_user_may_not_run_info_never_accepts_a_revoked_token_on_a_promoted_replica(  # noqa: E501
    region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    """The hardened ACL of the Redis docs (``+@all -@dangerous``) forbids ``INFO``: the
    replication-id check inside validate.lua must then fail closed, not be skipped."""
    region.start_relay()
    region.start_worker("eu")
    region.wait_ready("eu")
    tokens = [region.store.issue(USER, n, f"t{n}") for n in range(10)]
    redis_set.wait_in_sync()
    replica = redis_set.replicas[0]
    redis_set.client(replica).acl_setuser(
        "svc",
        enabled=True,
        passwords=["+svc-pw"],
        keys=["*"],
        channels=["*"],
        categories=["+@all", "-@dangerous"],
    )
    redis_set.pause(replica)  # the replica misses the revocations
    for token in tokens:
        seq = region.store.revoke_token(token.id).seq
    region.wait_applied(seq)
    region.kill_worker("eu")
    redis_set.kill(redis_set.primary)
    redis_set.promote(replica)
    host_port = replica.url.split("://", 1)[1]
    url = f"redis://svc:svc-pw@{host_port}"
    region.settings = region.settings.with_overrides(regions=(Region("eu", url),))
    validator = Validator.from_settings(region.settings, "eu")
    try:
        answers = [validator.validate(t.plain_text_token) for t in tokens]
        assert [a.outcome for a in answers if a.outcome is Outcome.VALID] == [], (
            "a revoked token was accepted by a promoted replica"
        )
        assert {a.reason for a in answers} == {"server_unverified"}
    finally:
        validator.close()


def test_a_worker_whose_redis_user_may_not_run_info_refuses_to_start_instead_of_losing_failover_checks(  # noqa: E501
    region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    """With ``TOKENSYNC_ALLOW_EVICTION=true`` the worker asked no ``INFO`` before applying:
    under ``+@all -@dangerous`` it recorded no replication id and never checked one, so a
    promoted lagging replica answered *valid* for revoked tokens. It must refuse to start."""
    primary = redis_set.primary
    redis_set.client(primary).acl_setuser(
        "worker",
        enabled=True,
        passwords=["+worker-pw"],
        keys=["*"],
        channels=["*"],
        categories=["+@all", "-@dangerous"],
    )
    worker_url = f"redis://worker:worker-pw@{primary.url.split('://', 1)[1]}"
    region.settings = region.settings.with_overrides(allow_eviction=True)
    region.start_relay()
    region.start_worker("eu", worker_url)
    tokens = [region.store.issue(USER, n, f"t{n}") for n in range(10)]
    proc = region.workers["eu"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not region.state("eu").ready:
        time.sleep(0.1)
    if proc.poll() is not None:  # refused: the fix
        assert proc.returncode != 0
        return
    region.wait_ready("eu")
    redis_set.wait_in_sync()
    replica = redis_set.replicas[0]
    redis_set.pause(replica)  # the replica misses the revocations
    for token in tokens:
        seq = region.store.revoke_token(token.id).seq
    region.wait_applied(seq)
    region.kill_worker("eu")
    redis_set.kill(primary)
    redis_set.promote(replica)
    region.settings = region.settings.with_overrides(regions=(Region("eu", replica.url),))
    validator = Validator.from_settings(region.settings, "eu")
    try:
        assert _accepted(validator, tokens) == [], "a revoked token was accepted"
    finally:
        validator.close()
