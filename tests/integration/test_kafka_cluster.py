"""A three-broker KRaft cluster from the local jars: tokensync's topics are replicated
(RF 3, min ISR 2), revocations reach a region through it, and an under-replicated token
topic is reported by the relay and fails ``tokensync doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from producer.doctor_kafka import _topic_values, kafka_checks
from producer.doctor_report import Outcome
from producer.kafka_io import KafkaAdmin, replica_counts
from shared.keys import Topics
from shared.settings import Settings
from shared.validator import Outcome as Validity
from stack.process import port_open
from tests.cluster_helpers import ThreeBrokers
from tests.harness import Pipeline, pipeline_context
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


@pytest.fixture
def cluster(three_brokers: ThreeBrokers) -> str:
    """The session's three-broker cluster (one quorum), shared with the chaos tests."""
    return three_brokers.bootstrap


def describe(bootstrap: str, topic: str) -> tuple[list[int], dict[str, str]]:
    """Replica counts of ``topic``'s partitions and its configs."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described: list[dict[str, Any]] = admin.describe_topics([topic])
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    return replica_counts(described), _topic_values(configs)


def test_the_cluster_has_three_brokers_and_the_token_topic_gets_rf_3_and_min_isr_2(
    cluster: str, topics: Topics
) -> None:
    admin = KafkaAdmin(cluster)
    try:
        assert 3 == admin.brokers()
        assert [] == admin.ensure_topics(topics, 3)
    finally:
        admin.close()
    for topic in (topics.tokens, topics.usage, topics.dead_letters):
        # a just-created topic reaches every node's metadata a moment later
        wait_for(lambda t=topic: bool(describe(cluster, t)[0]), 30, f"{topic} described")
        replicas, configs = describe(cluster, topic)
        assert replicas and {3} == set(replicas), (topic, replicas)
        assert "2" == configs["min.insync.replicas"], topic
    assert "compact" == describe(cluster, topics.tokens)[1]["cleanup.policy"]


def test_a_revocation_reaches_a_region_through_the_three_broker_cluster(
    cluster: str, tmp_path: Path, sqlite_url: str, topics: Topics, redis_url: str
) -> None:
    for pipeline in pipeline_context(
        Pipeline(tmp_path, cluster, sqlite_url, topics, {"eu": redis_url})
    ):
        pipeline.start_relay()
        pipeline.start_worker("eu")
        pipeline.wait_ready("eu")
        revoke_and_see_denied(pipeline)
        assert {3} == set(describe(cluster, topics.tokens)[0])


def revoke_and_see_denied(pipeline: Pipeline) -> None:
    """A token issued is valid in region eu; once revoked, it is denied there."""
    issued = pipeline.store.issue(USER, 1, "replicated")
    validator = pipeline.validator("eu")
    token = issued.plain_text_token
    try:
        wait_for(lambda: validator.validate(token).outcome == Validity.VALID, 30, "valid")
        pipeline.store.revoke_token(issued.id)
        wait_for(lambda: validator.validate(token).outcome == Validity.INVALID, 30, "denied")
    finally:
        validator.close()


def test_a_token_topic_with_rf_1_on_the_cluster_is_reported_and_fails_doctor(
    cluster: str, topics: Topics
) -> None:
    raw = KafkaAdminClient(bootstrap_servers=cluster)
    try:
        raw.create_topics(
            [NewTopic(topics.tokens, 3, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        raw.close()
    wait_for(lambda: bool(describe(cluster, topics.tokens)[0]), 30, "the RF-1 topic described")
    admin = KafkaAdmin(cluster)
    try:
        with capture_logs() as logged:
            weak = admin.ensure_topics(topics, 3)  # what the relay does when it starts
    finally:
        admin.close()
    assert [(topics.tokens, 1, 3)] == [(w.topic, w.replication_factor, w.brokers) for w in weak]
    assert any(
        e.get("event") == "topic_under_replicated"
        and e.get("log_level") == "warning"
        and e.get("topic") == topics.tokens
        for e in logged
    ), logged

    settings = Settings(kafka_bootstrap=cluster, topic_prefix=topics.prefix)
    checks = {c.name: c for c in kafka_checks(settings)}
    replication = checks["kafka replication"]
    assert Outcome.FAIL == replication.outcome, replication
    assert "replication factor 1" in replication.detail
    assert "min.insync.replicas" in replication.fix


def test_a_node_killed_by_id_restarts_with_its_port_open_and_rejoins_every_isr(
    three_brokers: ThreeBrokers, topics: Topics
) -> None:
    admin = KafkaAdmin(three_brokers.bootstrap)
    try:
        admin.ensure_topics(topics, 6)
    finally:
        admin.close()
    wait_for(lambda: bool(describe(three_brokers.bootstrap, topics.tokens)[0]), 30, "described")
    three_brokers.wait_in_sync([topics.tokens])
    victim = three_brokers.busiest_leader(topics.tokens)
    three_brokers.kill(victim)
    assert not three_brokers.alive(victim)
    # the controller fences the dead node and moves its leaderships to the others
    wait_for(lambda: victim not in three_brokers.leaders(topics.tokens).values(), 60, "new leaders")
    assert three_brokers.under_replicated([topics.tokens])  # its replicas left every ISR
    three_brokers.restart(victim)
    # started means started now, not the ready line of the node's previous run in its log
    assert port_open(three_brokers.cluster.node(victim).port)
    three_brokers.wait_in_sync([topics.tokens])
    assert [] == three_brokers.under_replicated([topics.tokens])
    three_brokers.pause(victim)
    assert victim in three_brokers.paused
    three_brokers.resume(victim)
    three_brokers.wait_in_sync([topics.tokens])
