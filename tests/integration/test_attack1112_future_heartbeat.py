"""Security review 11/12 (attack1112): a store clock stepped ahead for a moment.

The relay stamps heartbeats with the store's clock (``certified_ms``). If that clock is
stepped ahead (an NTP step, a VM resumed with a wrong clock) and corrected seconds later,
the heartbeats stamped meanwhile lie in the future. Validators rightly refuse a heartbeat
ahead of their clock (*unavailable*, ``clock_ahead``), but ``apply.lua`` keeps the highest
heartbeat per partition, so the correct heartbeats that follow are ignored and every region
stays unavailable until the wall clock reaches the bogus stamp: one second of a wrong
clock becomes an hour-long outage of every region (and, at its end, the bogus stamp
certifies the region fresh whatever it applied). Real Kafka, Redis, relay and worker; the
heartbeats the relay stamps while the store clock is an hour ahead are produced as the
relay would (same key, same signing)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from shared.events import Heartbeat, encode
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import KEYRING, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
HOUR_MS = 3600 * 1000


def test_a_region_answers_again_soon_after_a_store_clock_step_ahead_is_corrected(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 1, "everyday")
    pipeline.wait_applied(token.seq)
    validator = pipeline.validator("eu")
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    try:
        assert Outcome.VALID == validator.validate(token.plain_text_token).outcome
        # for a moment the store's clock reads an hour ahead: one round of heartbeats
        ahead = int(time.time() * 1000) + HOUR_MS
        for p in range(pipeline.settings.partitions):
            beat = Heartbeat(p, ahead, token.seq)
            value = encode(beat)
            producer.send(
                pipeline.topics.tokens,
                key=beat.key,
                value=value,
                headers=KEYRING.sign(beat.key, value),
                partition=p,
            )
        producer.flush()
        wait_for(
            lambda: validator.validate(token.plain_text_token).reason == "clock_ahead",
            30,
            "the region refuses the heartbeat from the future",
        )
        # the clock is right again: the relay keeps stamping correct heartbeats every 0.2 s
        deadline = time.monotonic() + 15
        result = validator.validate(token.plain_text_token)
        while time.monotonic() < deadline and result.outcome is not Outcome.VALID:
            time.sleep(0.2)
            result = validator.validate(token.plain_text_token)
        assert result.outcome is Outcome.VALID, (
            f"15 s after the store clock was corrected the region is still "
            f"{result.outcome.value} ({result.reason}); it stays so for an hour"
        )
    finally:
        producer.close()
        validator.close()
