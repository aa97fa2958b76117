"""A region whose epochs or partitions hash is gone (evicted, flushed, deleted) is
*incomplete*: its revocation epochs can no longer be told from "none", its applied offsets
and heartbeats from "nothing applied yet". ``validate.lua`` answers unavailable and
``shared.region_state`` says not ready; the near-cache, which learns the region's
readiness from its own pings (``shared/ping.lua``), must not keep answering *valid* for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from shared.events import TokenOp
from shared.keys import RedisKeys
from shared.nearcache import near_caches_behind, sync_near_caches
from shared.region_state import read_region_state
from shared.tokenformat import checksum
from shared.validator import Outcome, Policy, Validator
from tests.kafka_helpers import wait_for
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration

A = f"{'a' * 40}{checksum('a' * 40)}"


@pytest.fixture
def near_cached(redis_url: str) -> Iterator[tuple[Validator, redis.Redis]]:
    region = RegionFixture(redis_url)
    # a budget far beyond the test's length: only the region's completeness can close
    # the near-cache's window, never the age of its heartbeats
    validator = Validator.from_url(
        redis_url, policy=Policy(staleness_budget_s=60, clock_skew_allowance_s=0)
    )
    near = validator.enable_near_cache()
    time.sleep(0.2)  # the listener subscribes
    region.beat()
    wait_for(lambda: near.live, 5, "near-cache listener heard the region")
    region.token(A, owner="1", abilities=("read",))
    wait_for(
        lambda: validator.validate(A).source == "near-cache", 5, "the near-cache holds the token"
    )
    client = redis.Redis.from_url(redis_url)
    yield validator, client
    client.close()
    validator.close()


def _answers_until_unavailable(validator: Validator) -> list[tuple[Outcome, str | None]]:
    """The near-cache pings every 50 ms: well within 2 s it must know what the region
    knows. The answers given meanwhile, the last one last."""
    deadline = time.monotonic() + 2
    answers = []
    while time.monotonic() < deadline:
        result = validator.validate(A)
        answers.append((result.outcome, result.source))
        time.sleep(0.05)
    return answers


def test_a_near_cache_stops_answering_valid_once_its_regions_epochs_hash_is_gone(
    near_cached: tuple[Validator, redis.Redis],
) -> None:
    validator, client = near_cached
    keys = RedisKeys()
    client.delete(keys.epochs)  # evicted or deleted; no worker runs to rebuild it
    assert not read_region_state(client, keys, "eu").ready
    answers = _answers_until_unavailable(validator)
    assert (Outcome.UNAVAILABLE, "region") == answers[-1], answers[-5:]


def test_a_near_cache_stops_answering_valid_once_its_regions_partitions_hash_is_gone(
    near_cached: tuple[Validator, redis.Redis],
) -> None:
    validator, client = near_cached
    keys = RedisKeys()
    client.delete(keys.partitions)  # evicted or deleted; no worker runs to rebuild it
    assert not read_region_state(client, keys, "eu").ready
    answers = _answers_until_unavailable(validator)
    assert (Outcome.UNAVAILABLE, "region") == answers[-1], answers[-5:]


def test_a_rebuild_of_the_region_keeps_receipts_waiting_for_a_near_cache_that_still_answers_valid(
    redis_url: str,
) -> None:
    """A rebuild (here: the epochs hash evicted, so the next apply starts a new generation)
    purges the namespace; the near-caches' registrations are not cache content. Were they
    purged, a receipt would stop waiting for a stalled near-cache that still answers *valid*
    from memory for the revoked token. The stall is played by holding the near-cache's lock
    (its listener and pinger stop; a hit answers without it)."""
    region = RegionFixture(redis_url)
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    validator = Validator.from_url(redis_url, policy=Policy(staleness_budget_s=60))
    near = validator.enable_near_cache(bound_s=5.0)  # it pings every second
    stalled = False
    try:
        time.sleep(0.2)  # the listener subscribes
        region.beat()
        wait_for(lambda: near.live, 5, "the near-cache certified itself")
        region.token(A, owner="1")
        wait_for(lambda: validator.validate(A).source == "near-cache", 5, "a near-cache hit")
        near._lock.acquire()  # its listener and pinger stop here, as a starved thread would
        stalled = True
        client.delete(keys.epochs)  # evicted: the next apply rebuilds the region
        region.token(A, owner="1", op=TokenOp.REVOKED)
        assert client.hget(keys.meta, "generation") is not None
        since = sync_near_caches(client, keys)  # what a receipt does once applied
        behind = near_caches_behind(client, keys, since)
        hit = near.get(A, int(time.time() * 1000)) is not None
        answer = validator.validate(A) if hit else None
        still_valid = answer is not None and answer.outcome is Outcome.VALID
        assert not (still_valid and not behind), (
            "the receipt would say enforced while the near-cache answers valid"
        )
    finally:
        if stalled:
            near._lock.release()
        validator.close()
        client.close()


def test_a_region_whose_partitions_hash_is_gone_answers_unavailable_as_region_status_says(
    redis_url: str,
) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(A, owner="1")
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    validator = Validator.from_url(redis_url, policy=Policy(staleness_budget_s=60))
    try:
        assert Outcome.VALID is validator.validate(A).outcome
        client.delete(keys.partitions)  # evicted or deleted; no worker runs to rebuild it
        state = read_region_state(client, keys, "eu")
        assert (False, False) == (state.ready, state.complete)
        assert Outcome.UNAVAILABLE is validator.validate(A).outcome
    finally:
        validator.close()
        client.close()
