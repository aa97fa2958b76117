"""Security review 11/12 (attack1112): a validator host whose clock was stepped back.

The region check rightly refuses to answer when the region's heartbeat lies ahead of the
validator's clock (*unavailable*, ``clock_ahead``). Under the ``fallback`` policy the store
then answers, but judged with the same wrong clock: a token that expired half an hour ago
is *valid* again, although the store, whose clock is right, knows it expired. Real Redis
and the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from producer.fallback import StoreFallback
from producer.store import TokenStore
from shared.validator import Outcome, Policy, Validator
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_validator_clock_an_hour_behind_never_revives_an_expired_token_through_the_store(
    redis_url: str, store: TokenStore
) -> None:
    expired_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=30)
    token = store.issue(USER, 1, "expired", ["*"], expires_at=expired_at)
    RegionFixture(redis_url).beat()  # the region is fresh by every right clock
    right = Validator.from_url(
        redis_url, policy=Policy(on_unavailable="fallback"), fallback=StoreFallback(store)
    )
    behind = Validator.from_url(
        redis_url,
        policy=Policy(on_unavailable="fallback"),
        fallback=StoreFallback(store),
        clock=lambda: time.time() - 3600,  # an NTP step back of one hour on this host
    )
    try:
        assert Outcome.INVALID == right.validate(token.plain_text_token).outcome
        result = behind.validate(token.plain_text_token)
        assert result.outcome is not Outcome.VALID, (
            f"a token expired 30 min ago is valid through the {result.source} on a validator "
            f"whose clock is an hour behind"
        )
    finally:
        right.close()
        behind.close()
