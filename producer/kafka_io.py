"""Everything that talks to Kafka with kafka-python: topics, the publisher, offsets, groups.

This is the only module that imports ``kafka``. Errors from it are wrapped in
``PublishError`` at this boundary.

Over 350 lines: on purpose the one boundary where ``kafka`` is imported (topics,
publisher, offsets, groups, security), so that no other module depends on kafka-python.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import kafka
import kafka.errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from producer.publisher import OutgoingRecord, Placement, RecordTooLargeError
from shared import tracing
from shared.errors import PublishError
from shared.kafka_client import KafkaClientConfig, auth_failures, replication_defaults
from shared.keys import Topics
from shared.logs import get_logger
from shared.usage import SignedUsageRecord

__all__ = [
    "KafkaAdmin",
    "KafkaPublisher",
    "TopicReplication",
    "UsageConsumer",
    "check_credentials",
    "replica_counts",
    "topic_configs",
]

PLAINTEXT = KafkaClientConfig()
#: What kafka-python raises when a broker refuses a client's SASL credentials.
AUTH_ERRORS = (kafka.errors.SaslAuthenticationFailedError,)

log = get_logger(__name__)

#: How old the relay's idea of the token topic's partition count may grow.
PARTITIONS_MAX_AGE_S = 5.0

#: Longer than a publish takes to append its records: they wait for its flush (at most
#: ``delivery_timeout_ms - request_timeout_ms``, which kafka-python checks).
LINGER_UNTIL_FLUSH_MS = 1000

# A record of the token topic is about a key (token hash, scope, heartbeat partition):
# compaction keeps the newest per key forever, which is what bootstrapping regions read.
TOKENS_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": "3600000",
    "max.message.bytes": "1048576",
}
DEAD_LETTER_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(14 * 24 * 3600 * 1000)}
USAGE_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)}


def topic_configs(
    topics: Topics, partitions: int, replication_factor: int = 1, min_insync_replicas: int = 1
) -> dict[str, dict[str, Any]]:
    """The topics tokensync needs, with partitions, replication and configs, in
    kafka-python's dict form."""
    isr = {"min.insync.replicas": str(min_insync_replicas)}
    return {
        topics.tokens: {
            "num_partitions": partitions,
            "replication_factor": replication_factor,
            "configs": TOKENS_TOPIC_CONFIG | isr,
        },
        topics.dead_letters: {
            "num_partitions": 1,
            "replication_factor": replication_factor,
            "configs": DEAD_LETTER_CONFIG | isr,
        },
        topics.usage: {
            "num_partitions": partitions,
            "replication_factor": replication_factor,
            "configs": USAGE_CONFIG | isr,
        },
    }


def replica_counts(described: Sequence[Mapping[str, Any]]) -> list[int]:
    """The replica count of each partition in kafka-python's ``describe_topics`` answer
    (``replica_nodes`` in 3.x metadata, ``replicas`` in older shapes)."""
    return [
        len(p.get("replica_nodes") or p.get("replicas") or [])
        for t in described
        for p in t.get("partitions") or []
    ]


class TopicReplication:
    """A topic's replication as the cluster reports it."""

    def __init__(self, topic: str, replication_factor: int, brokers: int) -> None:
        self.topic = topic
        self.replication_factor = replication_factor
        self.brokers = brokers


class KafkaAdmin:
    """Topic creation, end offsets and consumer-group housekeeping."""

    def __init__(
        self, bootstrap: str, *, timeout_s: float = 10.0, client: KafkaClientConfig = PLAINTEXT
    ) -> None:
        with _connecting(bootstrap, client):
            self._admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="tokensync-admin",
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(max(timeout_s, 1.0) * 1000),
                **client.kafka_python_kwargs(),
            )
        self._bootstrap = bootstrap
        self._client = client

    def close(self) -> None:
        """Release the connection."""
        self._admin.close()

    def brokers(self) -> int:
        """How many brokers the cluster's metadata lists."""
        try:
            return len(self._admin.describe_cluster().get("brokers") or [])
        except kafka.errors.KafkaError as e:
            raise PublishError(f"describing the Kafka cluster failed: {e}") from e

    def replication(self, topic: str) -> int | None:
        """The smallest replica count of ``topic``'s partitions (None: no such topic)."""
        try:
            described = self._admin.describe_topics([topic])
        except kafka.errors.UnknownTopicOrPartitionError:
            return None
        except kafka.errors.KafkaError as e:
            raise PublishError(f"describing topic {topic} failed: {e}") from e
        counts = replica_counts(described)
        return min(counts) if counts else None

    def ensure_topics(
        self,
        topics: Topics,
        partitions: int,
        *,
        replication_factor: int = 0,
        min_insync_replicas: int = 0,
    ) -> list[TopicReplication]:
        """Create tokensync's topics unless they exist (existing ones are left as they are).

        New topics get ``replication_factor`` replicas and ``min_insync_replicas`` (0: the
        defaults, RF min(3, brokers) and min ISR 2 when RF >= 3, else 1). Returns the
        existing topics whose replication factor is below the wanted one (logged as
        ``topic_under_replicated`` warnings)."""
        brokers = self.brokers()
        rf, isr = replication_defaults(brokers, replication_factor, min_insync_replicas)
        if rf > brokers:
            raise PublishError(
                f"replication factor {rf} needs {rf} brokers; the cluster lists {brokers}"
            )
        wanted = topic_configs(topics, partitions, rf, isr)
        try:
            existing = set(self._admin.list_topics())
            missing = {name: spec for name, spec in wanted.items() if name not in existing}
            if missing:
                self._admin.create_topics(missing, raise_errors=False)
                self._admin.wait_for_topics(list(missing), timeout_ms=30_000)
                log.info(
                    "topics_created",
                    topics=sorted(missing),
                    replication_factor=rf,
                    min_insync_replicas=isr,
                )
        except kafka.errors.KafkaError as e:
            raise PublishError(f"creating topics failed: {e}") from e
        weak = []
        for name in sorted(set(wanted) & existing):
            found = self.replication(name)
            if found is not None and found < rf:
                weak.append(TopicReplication(name, found, brokers))
                log.warning(
                    "topic_under_replicated",
                    topic=name,
                    replication_factor=found,
                    wanted=rf,
                    brokers=brokers,
                    fix="kafka-reassign-partitions, or delete and re-create the topic",
                )
        return weak

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written in each partition of ``topic``."""
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            **self._client.kafka_python_kwargs(),
        )
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            ends: Mapping[TopicPartition, int] = consumer.end_offsets(tps) if tps else {}
            return {tp.partition: int(offset) for tp, offset in ends.items()}
        except kafka.errors.KafkaError as e:
            raise PublishError(f"reading end offsets of {topic} failed: {e}") from e
        finally:
            consumer.close()

    def delete_group(self, group: str) -> None:
        """Delete a consumer group (its members must have left)."""
        try:
            self._admin.delete_groups([group])
        except kafka.errors.KafkaError as e:
            raise PublishError(f"deleting consumer group {group} failed: {e}") from e


class KafkaPublisher:
    """kafka-python producer with acks=all and idempotence, reporting placements."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        timeout_s: float = 30.0,
        client: KafkaClientConfig = PLAINTEXT,
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        with _connecting(bootstrap, client):
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="tokensync-relay",
                acks="all",
                enable_idempotence=True,
                # Nothing leaves before ``publish`` flushes (unless a batch fills): each
                # publish is one produce request per broker, so a heartbeat round (a record
                # per partition) completes a region's parked fetch once, not once per chunk
                # (each completion leaves a far region without a parked fetch for a round
                # trip). The flush makes it ready at once: the linger itself never waits.
                linger_ms=LINGER_UNTIL_FLUSH_MS,
                batch_size=256 * 1024,
                max_in_flight_requests_per_connection=5,
                request_timeout_ms=int(timeout_s * 1000),
                delivery_timeout_ms=int(timeout_s * 1000) + 1000,
                retry_backoff_ms=50,
                reconnect_backoff_ms=50,
                reconnect_backoff_max_ms=1000,
                # partitions added to the topic are seen (and heartbeaten) within seconds
                metadata_max_age_ms=int(PARTITIONS_MAX_AGE_S * 1000),
                **client.kafka_python_kwargs(),
            )
        self._partitions: int | None = None
        self._partitions_at = 0.0

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        """Send in order; wait until every record is acknowledged by all in-sync replicas."""
        try:
            futures = [
                self._producer.send(
                    self.topic, value=r.value, key=r.key, headers=r.headers, partition=r.partition
                )
                for r in records
            ]
            tracing.relay_produced()
            try:
                self._producer.flush(timeout=self._timeout_s)
            except kafka.errors.KafkaTimeoutError:
                raise
            except kafka.errors.KafkaError as e:
                # A batch the broker refused as too large is split and sent again, and the
                # flush can end early ("Future not done"): each record's own outcome tells.
                log.warning("producer_flush_interrupted", error=str(e))
            metadata = [f.get(timeout=self._timeout_s) for f in futures]
        except kafka.errors.MessageSizeTooLargeError as e:
            # Fatal for an idempotent producer: the caller drops this client.
            raise RecordTooLargeError(f"the broker refused {len(records)} records: {e}") from e
        except kafka.errors.KafkaError as e:
            raise PublishError(f"publishing {len(records)} records failed: {e}") from e
        return [Placement(int(m.partition), int(m.offset)) for m in metadata]

    def partitions(self) -> int:
        """Partition count of the topic, from metadata at most ``PARTITIONS_MAX_AGE_S`` old
        (regions count a partition added to the topic as stale until it gets heartbeats)."""
        now = time.monotonic()
        if self._partitions is None or now - self._partitions_at >= PARTITIONS_MAX_AGE_S:
            self._partitions_at = now
            try:
                found = self._producer.partitions_for(self.topic)
            except kafka.errors.KafkaError as e:
                raise PublishError(f"reading partitions of {self.topic} failed: {e}") from e
            if not found:
                raise PublishError(f"topic {self.topic} has no partitions")
            if self._partitions is not None and len(found) != self._partitions:
                log.warning("topic_partitions_changed", before=self._partitions, after=len(found))
            self._partitions = len(found)
        return self._partitions

    def close(self) -> None:
        """Flush what is pending and close; during an outage, drop what is pending.

        Dropping is safe: unacknowledged rows stay unmarked in the outbox and are
        published again. kafka-python's ``close`` flushes first and raises when that
        times out, so it would never stop its sender (and raise again from ``__del__``);
        a failed close is therefore repeated without the flush.
        """
        try:
            self._producer.close(timeout=5)
        except kafka.errors.KafkaError as e:
            log.warning("producer_close_forced", error=str(e))
            self._producer.flush = lambda timeout=None: None
            self._producer.close(timeout=0)


class UsageConsumer:
    """Reads the usage topic (signed region batches: token id -> newest use) for the store."""

    def __init__(
        self, bootstrap: str, topic: str, group: str, *, client: KafkaClientConfig = PLAINTEXT
    ) -> None:
        with _connecting(bootstrap, client):
            self._consumer = KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **client.kafka_python_kwargs(),
            )

    def poll(self, timeout_s: float) -> list[SignedUsageRecord]:
        """The next records (maybe none), with key and headers for verification."""
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        except kafka.errors.KafkaError as e:
            raise PublishError(f"reading usage failed: {e}") from e
        return [
            SignedUsageRecord(
                r.key, r.value, tuple(r.headers or ()), int(r.partition), int(r.offset)
            )
            for records in batches.values()
            for r in records
        ]

    def commit(self) -> None:
        """Commit what ``poll`` returned (after the store applied it)."""
        try:
            self._consumer.commit()
        except kafka.errors.KafkaError as e:
            raise PublishError(f"committing usage offsets failed: {e}") from e

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close()


@contextmanager
def _connecting(bootstrap: str, client: KafkaClientConfig) -> Iterator[None]:
    """Wrap a client's construction: PublishError in one line, naming a refused login
    (kafka-python retries one until its bootstrap deadline, then raises a timeout)."""
    with auth_failures("kafka") if client.sasl else nullcontext() as refused:
        try:
            yield
        except kafka.errors.KafkaError as e:
            if isinstance(e, AUTH_ERRORS) or (refused is not None and refused.refused):
                raise PublishError(str(client.refused(bootstrap))) from e
            raise PublishError(_reach_error(bootstrap, client, e)) from e


def _reach_error(bootstrap: str, client: KafkaClientConfig, error: Exception) -> str:
    """One line for a client that could not connect (no password in it)."""
    return f"cannot reach Kafka at {bootstrap} ({client.describe()}): {error}"


def check_credentials(bootstrap: str, client: KafkaClientConfig, timeout_s: float = 8.0) -> None:
    """Connect once: ConfigError if the cluster refuses the credentials; an unreachable
    cluster is only logged (the caller's retries handle it). kafka-python's own log lines
    of this attempt are kept out of the output (they would repeat the failure)."""
    if not client.sasl:
        return
    with auth_failures("kafka") as failures:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="tokensync-credentials",
                bootstrap_timeout_ms=int(timeout_s * 1000),
                request_timeout_ms=int(timeout_s * 1000),
                **client.kafka_python_kwargs(),
            )
            admin.close()
        except AUTH_ERRORS as e:
            raise client.refused(bootstrap) from e
        except kafka.errors.KafkaError as e:
            if failures.refused:
                raise client.refused(bootstrap) from e
            log.warning("kafka_unreachable", error=_reach_error(bootstrap, client, e))


def read_log(
    bootstrap: str, topic: str, *, client: KafkaClientConfig = PLAINTEXT, timeout_s: float = 60
) -> tuple[
    list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]], dict[int, int]
]:
    """Every record of ``topic`` up to its end offsets when called (partition, offset, key,
    value, headers), and those end offsets (``tokensync keys reseal``, ``doctor``)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client.kafka_python_kwargs()
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return [], {}
        ends = {tp.partition: int(o) for tp, o in consumer.end_offsets(tps).items()}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            if time.monotonic() > deadline:
                raise PublishError(f"reading {topic} took longer than {timeout_s:g} s")
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                found.extend(
                    (r.partition, r.offset, r.key, r.value, list(r.headers or ()))
                    for r in records
                    if r.offset < ends[r.partition]
                )
        return found, ends
    except kafka.errors.KafkaError as e:
        raise PublishError(f"reading {topic} failed: {e}") from e
    finally:
        consumer.close()
