"""``tokensync doctor``'s checks of the token topic: ``cleanup.policy``, replication
factor and ``min.insync.replicas``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from producer.doctor_report import Check, Outcome
from shared.kafka_client import auth_failures, replication_defaults
from shared.keys import Topics
from shared.settings import Settings

__all__ = ["kafka_checks"]


def kafka_checks(settings: Settings) -> list[Check]:
    """The token topic as the brokers describe it: compacted, replicated, durable."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    from producer.kafka_io import replica_counts

    topic = Topics(settings.topic_prefix).tokens
    client = settings.kafka_client
    # a refused login: one line naming it (kafka-python would retry it until its bootstrap
    # deadline, print each attempt, and then report a timeout as if Kafka were unreachable)
    with auth_failures("kafka") if client.sasl else nullcontext() as refused:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap,
                client_id="tokensync-doctor",
                request_timeout_ms=5000,
                bootstrap_timeout_ms=10_000,  # as the relay's admin client
                **client.kafka_python_kwargs(),
            )
        except KafkaError as e:
            if isinstance(e, SaslAuthenticationFailedError) or (refused and refused.refused):
                line = str(client.refused(settings.kafka_bootstrap))
                return [Check("kafka", Outcome.FAIL, line, "correct the SASL settings")]
            raise
    try:
        described = admin.describe_topics([topic])
        brokers = len(admin.describe_cluster().get("brokers", []))
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    counts = replica_counts(described)
    if not counts:
        return [Check("kafka topic", Outcome.FAIL, f"{topic} does not exist", "start the relay")]
    values = _topic_values(configs)
    checks = []
    policy = values.get("cleanup.policy", "")
    checks.append(
        Check("kafka cleanup.policy", Outcome.PASS, f"{topic}: {policy}")
        if "compact" in policy.split(",")
        else Check(
            "kafka cleanup.policy",
            Outcome.FAIL,
            f"{topic}: cleanup.policy {policy or 'unknown'}: deleted segments lose grants, "
            "revocations and epochs a new region needs",
            f"kafka-configs --alter --topic {topic} --add-config cleanup.policy=compact",
        )
    )
    replicas = min(counts)
    isr = int(values.get("min.insync.replicas", "1") or 1)
    want_rf, want_isr = replication_defaults(
        brokers, settings.kafka_replication_factor, settings.kafka_min_insync_replicas
    )
    if replicas < want_rf or isr < want_isr:
        checks.append(
            Check(
                "kafka replication",
                Outcome.FAIL,
                f"{topic}: replication factor {replicas}, min.insync.replicas {isr} on "
                f"{brokers} brokers (wanted {want_rf} and {want_isr}): losing one broker "
                "can lose revocations or stop the relay",
                f"kafka-reassign-partitions to {want_rf} replicas and kafka-configs --alter "
                f"--topic {topic} --add-config min.insync.replicas={want_isr}",
            )
        )
    elif brokers <= 1:
        checks.append(
            Check(
                "kafka replication", Outcome.PASS, f"single broker: replication factor {replicas}"
            )
        )
    elif replicas < 3 or isr < 2:
        checks.append(
            Check(
                "kafka replication",
                Outcome.WARN,
                f"replication factor {replicas}, min.insync.replicas {isr} on {brokers} brokers",
                "replication factor 3 and min.insync.replicas 2",
            )
        )
    else:
        checks.append(
            Check(
                "kafka replication", Outcome.PASS, f"replication factor {replicas}, min ISR {isr}"
            )
        )
    return checks


def _topic_values(configs: Any) -> dict[str, str]:
    """``{key: value}`` from describe_configs' nested answer (shapes differ by version)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (
                    isinstance(key, str)
                    and "." in key
                    and isinstance(value, dict)
                    and "value" in value
                ):
                    found[key] = str(value["value"] or "")
                elif isinstance(key, str) and "." in key and isinstance(value, str):
                    found[key] = value
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(configs)
    return found
