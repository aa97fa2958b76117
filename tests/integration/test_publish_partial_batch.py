"""Review of ``KafkaPublisher.publish`` with records waiting for its flush (linger): when
the broker refuses one record of a batch and takes the others (in another partition, or
before and after it in the same one), publish raises instead of returning placements,
so the relay marks none of that batch published. The records it took are read back."""

from __future__ import annotations

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from producer.kafka_io import KafkaPublisher
from producer.publisher import OutgoingRecord, RecordTooLargeError
from shared.keys import Topics
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

LIMIT = 10_000  # this topic's max.message.bytes; the client would send up to 1 MiB


def test_publish_raises_when_the_broker_refuses_one_record_and_takes_the_others(
    kafka_bootstrap: str, topics: Topics
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        configs = {"max.message.bytes": str(LIMIT)}
        admin.create_topics([NewTopic(topics.tokens, 2, 1, topic_configs=configs)])
    finally:
        admin.close()
    small = [OutgoingRecord(f"k{n}".encode(), b"v", [], n % 2) for n in range(4)]
    huge = OutgoingRecord(b"huge", b"x" * (5 * LIMIT), [], 1)
    publisher = KafkaPublisher(kafka_bootstrap, topics.tokens, timeout_s=10)
    try:
        with pytest.raises(RecordTooLargeError):
            publisher.publish([small[0], small[1], huge, small[2], small[3]])
    finally:
        publisher.close()
    landed = {r.key for r in read_topic(kafka_bootstrap, topics.tokens, expect=1)}
    assert b"huge" not in landed
    assert b"k0" in landed  # the partition without the refused record took its records
