"""The near-cache answers valid tokens in process and forgets them as soon as the region
applies a change, within the staleness budget at worst."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.events import TokenOp, principal_scope
from shared.tokenformat import checksum
from shared.validator import AsyncValidator, Outcome, Policy, Validator
from tests.kafka_helpers import wait_for
from tests.region_helpers import USER, RegionFixture, now_ms

pytestmark = pytest.mark.integration

A = f"{'a' * 40}{checksum('a' * 40)}"
B = f"{'b' * 40}{checksum('b' * 40)}"


@pytest.fixture
def cached(redis_url: str) -> tuple[RegionFixture, Validator]:
    region = RegionFixture(redis_url)
    validator = Validator.from_url(redis_url, policy=Policy(staleness_budget_s=2))
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
