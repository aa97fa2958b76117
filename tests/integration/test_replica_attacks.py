"""Attacks on a region served by a primary and read replicas: an unlucky operator's
setup, a failover, and the receipts (issue 17 item 4, review). Each test failed on the
code before its fix."""

from __future__ import annotations

import time

import pytest

from shared.settings import Region
from shared.validator import Outcome, Validator
from tests.harness import Pipeline
from tests.replica_helpers import ReplicatedRedis, accepted

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_validator_whose_redis_user_may_not_run_info_never_accepts_a_revoked_token_on_a_promoted_replica(  # noqa: E501
    replicated_region: Pipeline, redis_set: ReplicatedRedis
) -> None:
    """The hardened ACL of the Redis docs (``+@all -@dangerous``) forbids ``INFO``: the
    replication-id check inside validate.lua must then fail closed, not be skipped."""
    replicated_region.start_relay()
    replicated_region.start_worker("eu")
    replicated_region.wait_ready("eu")
    tokens = [replicated_region.store.issue(USER, n, f"t{n}") for n in range(10)]
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
        seq = replicated_region.store.revoke_token(token.id).seq
    replicated_region.wait_applied(seq)
    replicated_region.kill_worker("eu")
    redis_set.kill(redis_set.primary)
    redis_set.promote(replica)
    host_port = replica.url.split("://", 1)[1]
    url = f"redis://svc:svc-pw@{host_port}"
    replicated_region.settings = replicated_region.settings.with_overrides(
        regions=(Region("eu", url),)
    )
    validator = Validator.from_settings(replicated_region.settings, "eu")
    try:
        answers = [validator.validate(t.plain_text_token) for t in tokens]
        assert [a.outcome for a in answers if a.outcome is Outcome.VALID] == [], (
            "a revoked token was accepted by a promoted replica"
        )
        assert {a.reason for a in answers} == {"server_unverified"}
    finally:
        validator.close()


def test_a_worker_whose_redis_user_may_not_run_info_refuses_to_start_instead_of_losing_failover_checks(  # noqa: E501
    replicated_region: Pipeline, redis_set: ReplicatedRedis
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
    replicated_region.settings = replicated_region.settings.with_overrides(allow_eviction=True)
    replicated_region.start_relay()
    replicated_region.start_worker("eu", worker_url)
    tokens = [replicated_region.store.issue(USER, n, f"t{n}") for n in range(10)]
    proc = replicated_region.workers["eu"]
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and proc.poll() is None
        and not replicated_region.state("eu").ready
    ):
        time.sleep(0.1)
    if proc.poll() is not None:  # refused: the fix
        assert proc.returncode != 0
        return
    replicated_region.wait_ready("eu")
    redis_set.wait_in_sync()
    replica = redis_set.replicas[0]
    redis_set.pause(replica)  # the replica misses the revocations
    for token in tokens:
        seq = replicated_region.store.revoke_token(token.id).seq
    replicated_region.wait_applied(seq)
    replicated_region.kill_worker("eu")
    redis_set.kill(primary)
    redis_set.promote(replica)
    replicated_region.settings = replicated_region.settings.with_overrides(
        regions=(Region("eu", replica.url),)
    )
    validator = Validator.from_settings(replicated_region.settings, "eu")
    try:
        assert accepted(validator, tokens) == [], "a revoked token was accepted"
    finally:
        validator.close()
