"""Security review 11/12 (attack1112): partitions added to the token topic while the relay
runs. The relay asks the topic's partition count once and remembers it, so it never
heartbeats (nor routes to) a partition added later, while every region's worker learns the
new count within seconds and then has a partition without a heartbeat: the region answers
*unavailable* until someone restarts the relay (real Kafka, Redis, relay and worker)."""

from __future__ import annotations

import time

import pytest
from kafka.admin import KafkaAdminClient, NewPartitions

from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_region_answers_again_after_partitions_are_added_while_the_relay_runs(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 1, "everyday")
    pipeline.wait_applied(token.seq)
    validator = pipeline.validator("eu")
    try:
        assert Outcome.VALID == validator.validate(token.plain_text_token).outcome
        admin = KafkaAdminClient(bootstrap_servers=pipeline.settings.kafka_bootstrap)
        try:
            admin.create_partitions({pipeline.topics.tokens: NewPartitions(total_count=4)})
        finally:
            admin.close()
        # the worker learns the fourth partition (metadata max age 5 s, then a rebalance)
        wait_for(lambda: pipeline.state("eu").partition_count == 4, 30, "four partitions")
        # heartbeats come every 0.2 s: a relay that knew the fourth partition would have
        # certified it many times over within 15 s; the region must answer again
        deadline = time.monotonic() + 15
        outcome = validator.validate(token.plain_text_token)
        while time.monotonic() < deadline and outcome.outcome is not Outcome.VALID:
            time.sleep(0.2)
            outcome = validator.validate(token.plain_text_token)
        state = pipeline.state("eu")
        assert outcome.outcome is Outcome.VALID, (
            f"region still {outcome.outcome.value} ({outcome.reason}) 15 s after partitions "
            f"were added; partition heartbeats: "
            f"{ {p: s.heartbeat_ms for p, s in state.partitions.items()} }"
        )
    finally:
        validator.close()
