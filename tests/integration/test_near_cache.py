"""The near-cache answers valid tokens in process and forgets them as soon as the region
applies a change, within the staleness budget at worst."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest
import redis

from producer.receipts import wait_for_receipt
from shared.events import TokenOp, principal_scope
from shared.keys import RedisKeys
from shared.nearcache import near_caches_behind, redis_time_ms, sync_near_caches
from shared.tokenformat import checksum
from shared.validator import AsyncValidator, Outcome, Policy, Validator
from stack.delayproxy import DelayProxy
from stack.process import free_port
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for
from tests.region_helpers import USER, RegionFixture, now_ms

pytestmark = pytest.mark.integration

A = f"{'a' * 40}{checksum('a' * 40)}"
B = f"{'b' * 40}{checksum('b' * 40)}"


@pytest.fixture
def cached(redis_url: str) -> tuple[RegionFixture, Validator]:
    region = RegionFixture(redis_url)
    validator = Validator.from_url(
        redis_url, policy=Policy(staleness_budget_s=2, clock_skew_allowance_s=0)
    )
    near = validator.enable_near_cache()
    time.sleep(0.2)  # the listener subscribes
    region.beat()
    wait_for(lambda: near.live, 5, "near-cache listener heard the region")
    region.token(A, owner="1", abilities=("read",))
    region.token(B, owner="2")
    time.sleep(0.2)  # let the listener hear both changes before the test reads
    yield region, validator
    validator.close()


def sources(validator: Validator, token: str, times: int = 3) -> list[str]:
    return [validator.validate(token, ["read"]).source for _ in range(times)]


def test_repeated_valid_answers_come_from_the_near_cache(
    cached: tuple[RegionFixture, Validator],
) -> None:
    _, validator = cached
    assert ["region", "near-cache", "near-cache"] == sources(validator, A)
    forbidden = validator.validate(A, ["write"])
    assert (Outcome.FORBIDDEN, "near-cache") == (forbidden.outcome, forbidden.source)


def test_a_revocation_applied_in_the_region_evicts_the_entry(
    cached: tuple[RegionFixture, Validator],
) -> None:
    region, validator = cached
    sources(validator, A)
    region.token(A, owner="1", op=TokenOp.REVOKED)
    wait_for(lambda: validator.validate(A).outcome is Outcome.INVALID, 2, "revocation seen")
    assert "region" == validator.validate(A).source


def test_an_epoch_clears_everything(cached: tuple[RegionFixture, Validator]) -> None:
    region, validator = cached
    sources(validator, A)
    sources(validator, B)
    region.epoch(principal_scope(USER, "2"), now_ms() + 1)
    wait_for(lambda: validator.validate(B).outcome is Outcome.INVALID, 2, "epoch seen")
    assert "region" == validator.validate(A).source


def test_without_news_from_the_region_the_cache_stops_answering(
    cached: tuple[RegionFixture, Validator],
) -> None:
    _, validator = cached
    sources(validator, A)
    time.sleep(2.2)  # longer than the 2 s budget without any message
    assert validator.near_cache is not None and not validator.near_cache.live
    result = validator.validate(A)
    assert "region" == result.source


def test_the_async_validator_has_the_same_near_cache(redis_url: str) -> None:
    region = RegionFixture(redis_url)

    async def run() -> list[tuple[Outcome, str | None]]:
        validator = AsyncValidator.from_url(redis_url, policy=Policy(staleness_budget_s=2))
        near = validator.enable_near_cache()
        try:
            await asyncio.sleep(0.2)  # the listener subscribes
            await asyncio.to_thread(region.beat)  # the fixture runs its own event loop
            await asyncio.to_thread(wait_for, lambda: near.live, 5, "listener heard the region")
            await asyncio.to_thread(region.token, A, owner="1", abilities=("read",))
            await asyncio.sleep(0.2)
            seen = [await validator.validate(A, ["read"]) for _ in range(3)]
            await asyncio.to_thread(region.token, A, owner="1", op=TokenOp.REVOKED)
            for _ in range(40):  # the eviction arrives through the listener
                if (await validator.validate(A)).outcome is Outcome.INVALID:
                    break
                await asyncio.sleep(0.05)
            seen.append(await validator.validate(A))
            return [(r.outcome, r.source) for r in seen]
        finally:
            await validator.close()

    assert asyncio.run(run()) == [
        (Outcome.VALID, "region"),
        (Outcome.VALID, "near-cache"),
        (Outcome.VALID, "near-cache"),
        (Outcome.INVALID, "region"),
    ]


@contextlib.contextmanager
def lagging(redis_url: str, delay_s: float) -> Iterator[redis.Redis]:
    """A client whose every byte to and from the Redis at ``redis_url`` is ``delay_s`` late
    (a listener in a busy or distant process hears the region that much later)."""
    target = urlsplit(redis_url)
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        started = asyncio.Event()
        proxy = DelayProxy(port, target.hostname or "", target.port or 6379, delay_s)
        serving = asyncio.create_task(proxy.serve(started))
        await started.wait()
        ready.set()
        await stop.wait()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in (serving, *others):
            task.cancel()
        await asyncio.gather(serving, *others, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(5), "the delay proxy did not start"
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}{target.path}", socket_timeout=5)
    try:
        yield client
    finally:
        client.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=5)
        loop.close()


def test_right_after_a_revocation_a_near_cache_whose_listener_lags_never_answers_valid(
    redis_url: str,
) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(A, owner="1")
    client = redis.Redis.from_url(redis_url)
    channel = RedisKeys().invalidations
    with lagging(redis_url, 0.15) as slow:
        validator = Validator.from_url(redis_url, policy=Policy(staleness_budget_s=5))
        validator.enable_near_cache(client=slow)
        try:
            wait_for(lambda: client.pubsub_numsub(channel)[0][1] >= 1, 5, "listener subscribed")
            for _ in range(10):  # the region keeps talking; the listener hears it 0.15 s late
                region.beat()
                assert Outcome.VALID == validator.validate(A).outcome
                time.sleep(0.05)
            region.token(A, owner="1", op=TokenOp.REVOKED)
            answers = [validator.validate(A) for _ in range(20)]
        finally:
            validator.close()
            client.close()
    assert [("invalid", "region")] * 20 == [(r.outcome.value, r.source) for r in answers]


def test_a_receipt_counts_a_near_cache_only_once_it_processed_the_revocation(
    redis_url: str,
) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(A, owner="1")
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    with lagging(redis_url, 0.1) as slow:
        validator = Validator.from_url(redis_url, policy=Policy(staleness_budget_s=5))
        near = validator.enable_near_cache(client=slow, bound_s=2.0)
        try:
            wait_for(lambda: near.live, 5, "the lagging near-cache certified itself")
            validator.validate(A)
            assert "near-cache" == validator.validate(A).source
            region.token(A, owner="1", op=TokenOp.REVOKED)
            since = sync_near_caches(client, keys)  # what a receipt does once applied
            assert [near.id] == near_caches_behind(client, keys, since)
            assert "near-cache" == validator.validate(A).source  # not yet enforced here
            wait_for(lambda: not near_caches_behind(client, keys, since), 5, "near-cache report")
            after = [validator.validate(A) for _ in range(20)]
        finally:
            validator.close()
    assert {("invalid", "region")} == {(r.outcome.value, r.source) for r in after}
    assert [] == near_caches_behind(client, keys, redis_time_ms(client))  # stop() unregistered
    client.close()


def test_a_near_cache_that_stopped_reporting_holds_receipts_for_its_bound_only(
    redis_url: str,
) -> None:
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    now = redis_time_ms(client)
    client.hset(keys.near_caches, "gone", orjson.dumps({"t": now - 100, "l": 300}))
    client.hset(keys.near_caches, "long-gone", orjson.dumps({"t": now - 60_000, "l": 300}))
    since = sync_near_caches(client, keys)
    assert ["gone"] == near_caches_behind(client, keys, since)
    assert [b"gone"] == client.hkeys(keys.near_caches)  # the silent one was forgotten
    wait_for(lambda: not near_caches_behind(client, keys, since), 2, "its bound passed")
    client.close()


def test_a_receipt_keeps_waiting_for_a_near_cache_silent_for_30_s_whose_bound_has_not_passed(
    redis_url: str,
) -> None:
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    now = redis_time_ms(client)
    # silent for 40 s, but it may answer for 50 s after its last report
    client.hset(keys.near_caches, "stalled", orjson.dumps({"t": now - 40_000, "l": 50_000}))
    # silent for longer than its bound plus the margin: it cannot be answering
    gone = {"t": now - 50_000 - 31_000, "l": 50_000}
    client.hset(keys.near_caches, "gone", orjson.dumps(gone))
    since = sync_near_caches(client, keys)
    assert ["stalled"] == near_caches_behind(client, keys, since)
    assert [b"stalled"] == client.hkeys(keys.near_caches)
    client.close()


def test_a_receipt_never_says_enforced_while_a_stalled_near_cache_still_answers_valid(
    pipeline: Pipeline,
) -> None:
    """A receipt forgot a near-cache silent for 30 s although its bound (up to 60 s) let it
    still answer. The stall is played by holding the near-cache's lock, so that its
    listener and pinger threads stop where a starved thread would; the validator thread
    answers from memory as it would. Real Kafka, Redis, relay and worker."""
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 8, "near", ["orders:read"])
    pipeline.wait_applied(token.seq)
    validator = pipeline.validator("eu", staleness_budget_s=60.0)
    near = validator.enable_near_cache(bound_s=50.0)
    stalled = False
    try:
        wait_for(lambda: near.live, 30, "the near-cache certified itself")
        validator.validate(token.plain_text_token)
        assert "near-cache" == validator.validate(token.plain_text_token).source
        near._lock.acquire()  # its listener and pinger stop here, as a starved thread would
        stalled = True
        revocation = pipeline.store.revoke_token(token.id)
        started = time.monotonic()
        receipt = wait_for_receipt(
            pipeline.settings,
            pipeline.store,
            revocation.seq,
            regions=[pipeline.settings.region("eu")],
            timeout_s=45.0,
        )
        waited = time.monotonic() - started
        at_ms = int(time.time() * 1000)
        # a hit answers without the lock; a miss would go to Redis (and answer invalid)
        answer = (
            validator.validate(token.plain_text_token)
            if near.get(token.plain_text_token, at_ms)
            else None
        )
        said = (answer.outcome.value, answer.source) if answer else None
        valid = answer is not None and answer.outcome is Outcome.VALID
        assert not (receipt.complete and valid), (
            f"receipt '{receipt.summary()}' after {waited:.1f} s, yet a validator of the "
            f"region answers {said}"
        )
    finally:
        if stalled:
            near._lock.release()
        validator.close()


def test_a_near_cache_never_answers_for_a_region_older_than_the_budget_despite_empty_batches(
    redis_url: str,
) -> None:
    region = RegionFixture(redis_url)
    beat_ms = now_ms() - 1_000
    region.beat(beat_ms)  # fresh under a 4 s budget for 3 s more (room on a loaded machine)
    region.token(A, owner="1")
    client = redis.Redis.from_url(redis_url)
    generation = client.hget(RedisKeys().meta, "generation")
    validator = Validator.from_url(
        redis_url, policy=Policy(staleness_budget_s=4, clock_skew_allowance_s=0)
    )
    near = validator.enable_near_cache()
    try:

        def empty_batch() -> None:  # what a lagging worker publishes: nothing changed
            client.publish(
                RedisKeys().invalidations,
                orjson.dumps({"g": (generation or b"").decode(), "e": 0}),
            )

        wait_for(lambda: empty_batch() or near.live, 2.5, "near-cache live")
        assert ["region", "near-cache"] == [validator.validate(A).source for _ in range(2)]
        # empty batches keep arriving until the region's last heartbeat is past the budget
        while now_ms() < beat_ms + 4_000 + 300:
            empty_batch()
            time.sleep(0.05)
        result = validator.validate(A)
    finally:
        validator.close()
        client.close()
    assert ("unavailable", "stale") == (result.outcome.value, result.reason)
