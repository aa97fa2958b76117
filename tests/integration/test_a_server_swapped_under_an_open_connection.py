"""The window of the out-of-band replication-id check (``shared.script_link``): a server
whose data goes back in time while the validator's connection to it stays open
(``REPLICAOF`` onto a lagging, promoted replica) is answered for as ``server_changed``
within the check interval, and with an interval of 0 (the check inside the script) at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.events import TokenOp
from shared.keys import MetaField, RedisKeys
from shared.tokenformat import checksum, hash_token
from shared.validator import Outcome, Policy, ValidationResult, Validator
from tests.kafka_helpers import wait_for
from tests.region_helpers import RegionFixture
from tests.replica_helpers import ReplicatedRedis, replicated_redis

pytestmark = pytest.mark.integration
TOKEN = "a" * 40 + checksum("a" * 40)
INTERVAL_S = 0.2


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    with replicated_redis(tmp_path / "redis") as servers:
        yield servers


def _swap_primary_onto_a_lagging_replica(redis_set: ReplicatedRedis, admin: redis.Redis) -> float:
    """The token is live on the replica, revoked on the primary (what a receipt counted);
    then the replica is promoted and the primary made its replica: the primary's data goes
    back in time under its open connections. Returns when the swap was seen complete."""
    replica = redis_set.replicas[0]
    admin.replicaof("127.0.0.1", str(replica.port))
    wait_for(
        lambda: (
            admin.info("replication").get("master_link_status") == "up"
            and admin.hget(RedisKeys().token(hash_token(TOKEN)), "s") == b"l"
        ),
        20,
        "the primary re-synced from the promoted replica",
    )
    return time.monotonic()


def _prepare(redis_set: ReplicatedRedis) -> tuple[RegionFixture, redis.Redis]:
    region = RegionFixture(redis_set.primary.url)
    region.beat()
    region.token(TOKEN, token_id=1)
    admin = redis_set.client(redis_set.primary)
    admin.hset(RedisKeys().meta, MetaField.SERVER, admin.info("replication")["master_replid"])
    redis_set.wait_in_sync()
    redis_set.pause(redis_set.replicas[0])  # it keeps the live token and serves it
    region.token(TOKEN, token_id=1, op=TokenOp.REVOKED)
    region.beat()
    redis_set.promote(redis_set.replicas[0])
    return region, admin


def _answers_until_server_changed(
    validator: Validator, deadline_s: float
) -> list[tuple[float, ValidationResult]]:
    answers: list[tuple[float, ValidationResult]] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        result = validator.validate(f"1|{TOKEN}")
        answers.append((time.monotonic(), result))
        if result.reason == "server_changed":
            break
    return answers


def test_a_server_swapped_under_an_open_connection_is_never_valid_past_the_check_interval(
    redis_set: ReplicatedRedis,
) -> None:
    _, admin = _prepare(redis_set)
    validator = Validator.from_url(
        redis_set.primary.url,
        policy=Policy(staleness_budget_s=30, server_check_interval_s=INTERVAL_S),
    )
    try:
        assert Outcome.INVALID == validator.validate(f"1|{TOKEN}").outcome  # revoked
        connections = admin.info("stats")["total_connections_received"]
        swapped = _swap_primary_onto_a_lagging_replica(redis_set, admin)
        answers = _answers_until_server_changed(validator, 10)
        assert "server_changed" == answers[-1][1].reason
        assert answers[-1][0] - swapped <= INTERVAL_S + 1.0, "noticed too late"
        late = [r for t, r in answers if t > swapped + INTERVAL_S and r.outcome is Outcome.VALID]
        assert [] == late, "a revoked token was valid after the check interval"
        # the validator kept its connection: only the interval check could notice
        assert connections == admin.info("stats")["total_connections_received"]
    finally:
        validator.close()


def test_with_a_check_interval_of_zero_a_swapped_server_is_never_valid(
    redis_set: ReplicatedRedis,
) -> None:
    _, admin = _prepare(redis_set)
    validator = Validator.from_url(
        redis_set.primary.url, policy=Policy(staleness_budget_s=30, server_check_interval_s=0)
    )
    try:
        assert Outcome.INVALID == validator.validate(f"1|{TOKEN}").outcome
        _swap_primary_onto_a_lagging_replica(redis_set, admin)
        result = validator.validate(f"1|{TOKEN}")
        assert (Outcome.UNAVAILABLE, "server_changed") == (result.outcome, result.reason)
    finally:
        validator.close()


def test_a_reopened_connection_is_checked_before_its_first_answer_whatever_the_interval(
    redis_set: ReplicatedRedis,
) -> None:
    """The interval bounds only a connection that stays open: a validator whose connection
    broke (a restart, a failover behind an address) checks the server it reached before it
    answers there."""
    region = RegionFixture(redis_set.primary.url)
    region.beat()
    region.token(TOKEN, token_id=1)
    admin = redis_set.client(redis_set.primary)
    admin.hset(RedisKeys().meta, MetaField.SERVER, admin.info("replication")["master_replid"])
    redis_set.wait_in_sync()
    replica = redis_set.replicas[0]
    validator = Validator.from_url(
        replica.url, policy=Policy(staleness_budget_s=30, server_check_interval_s=20)
    )
    try:
        assert Outcome.VALID == validator.validate(f"1|{TOKEN}").outcome
        redis_set.promote(replica)  # another replication id, the same data
        redis_set.client(replica).client_kill_filter(_type="normal")  # the connection breaks
        result = validator.validate(f"1|{TOKEN}")
        assert (Outcome.UNAVAILABLE, "server_changed") == (result.outcome, result.reason)
    finally:
        validator.close()
