"""Security review 11/12 (attack1112): a stalled near-cache listener outlives its receipt.

A receipt waits for every registered near-cache of the region, but forgets one whose last
report is 30 s old ("it stopped; it cannot be answering"). That assumption only holds for
answer bounds under 10 s: the bound may be up to 60 s, and a near-cache answers from its
entries for ``bound_s`` after its last certified ping, whether or not its listener thread
still runs. A listener that does not get to run for 30 s (a busy process, a long pause)
makes the receipt say "enforced" while that validator still answers *valid* for the
revoked token. The stall is played by holding the near-cache's lock, so that its listener
and pinger threads stop where a starved thread would; the validator thread answers from
memory as it would. Real Kafka, Redis, relay and worker."""

from __future__ import annotations

import time

import pytest

from producer.receipts import wait_for_receipt
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_receipt_never_says_enforced_while_a_stalled_near_cache_still_answers_valid(
    pipeline: Pipeline,
) -> None:
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
        now_ms = int(time.time() * 1000)
        # a hit answers without the lock; a miss would go to Redis (and answer invalid)
        answer = (
            validator.validate(token.plain_text_token)
            if near.get(token.plain_text_token, now_ms)
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
