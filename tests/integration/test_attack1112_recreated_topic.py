"""Security review 11/12 (attack1112): a token topic deleted and re-created behind a kept
Redis.

A cache is bound to the Kafka cluster id and the topic's *name*; a re-created topic is
noticed only when the cache applied more of a partition than the new topic holds. Once
the new topic has grown past the cache's offsets (the relay's heartbeats alone add five
records a second to every partition), the worker adopts the cache and resumes at its old
offsets: everything the new topic holds below them, a revocation included, is skipped, and
the region, fed fresh heartbeats, answers *valid* for the revoked token. Real Kafka, Redis,
relay and worker processes."""

from __future__ import annotations

import time

import pytest
from kafka.admin import KafkaAdminClient

from producer.kafka_io import KafkaAdmin
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def _ends(pipeline: Pipeline) -> dict[int, int]:
    admin = KafkaAdmin(pipeline.settings.kafka_bootstrap)
    try:
        return admin.end_offsets(pipeline.topics.tokens)
    finally:
        admin.close()


def test_a_worker_never_skips_a_revocation_in_a_re_created_token_topic(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay_process()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    victim = pipeline.store.issue(USER, 1, "victim")
    pipeline.wait_applied(victim.seq)
    pipeline.stop_worker("eu")
    pipeline.kill_relay_process()
    applied = {p: s.next_offset for p, s in pipeline.state("eu").partitions.items()}

    # the operator deletes the token topic and creates it again (same name, same cluster)
    admin = KafkaAdminClient(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    try:
        admin.delete_topics([pipeline.topics.tokens])
        wait_for(lambda: pipeline.topics.tokens not in admin.list_topics(), 60, "topic deleted")
    finally:
        admin.close()
    creator = KafkaAdmin(pipeline.settings.kafka_bootstrap)
    try:
        creator.ensure_topics(pipeline.topics, pipeline.settings.partitions)
    finally:
        creator.close()
    # a responder revokes the token; the relay publishes it first into the new topic
    revocation = pipeline.store.revoke_token(victim.id)
    pipeline.start_relay_process()
    wait_for(lambda: pipeline.store.position(revocation.seq).offset is not None, 60, "published")
    # the new topic grows past the cache's offsets (heartbeats, and everyday issuing)
    deadline = time.monotonic() + 90
    while not all(_ends(pipeline).get(p, 0) > o for p, o in applied.items()):
        assert time.monotonic() < deadline, (applied, _ends(pipeline))
        for n in range(20):
            pipeline.store.issue(USER, 100 + n, "everyday")
        time.sleep(0.5)

    pipeline.start_worker("eu")
    validator = pipeline.validator("eu")
    try:
        wait_for(
            lambda: validator.validate(victim.plain_text_token).outcome is not Outcome.UNAVAILABLE,
            60,
            "the region answers",
        )
        ends = _ends(pipeline)
        wait_for(
            lambda: all(pipeline.state("eu").has_applied(p, e - 1) for p, e in ends.items()),
            60,
            "the region caught up with the new topic",
        )
        result = validator.validate(victim.plain_text_token)
        assert result.outcome is not Outcome.VALID, (
            f"revoked token {result.outcome.value} after the topic was re-created; cache "
            f"offsets {applied}, new topic's revocation at "
            f"{pipeline.store.position(revocation.seq)}"
        )
    finally:
        validator.close()
