"""The usage stream is authenticated: forged or out-of-range records change nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from producer.kafka_io import UsageConsumer
from producer.store import TokenStore
from producer.usage import UsageApplier
from shared.keys import Topics
from shared.usage import UsageReport
from tests.kafka_helpers import KEYRING

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
YEAR_9999_MS = 253_402_300_799_000


def produce(
    kafka_bootstrap: str, topic: str, report: dict[str, object], *, signed: bool = False
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    value = orjson.dumps(report)
    headers = KEYRING.sign(b"eu", value) if signed else []
    producer.send(topic, key=b"eu", value=value, headers=headers).get(timeout=10)
    producer.close()


@contextmanager
def applying(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> Iterator[list[BaseException]]:
    """The store's usage applier on a thread; yields the exceptions that killed it."""
    group = f"{topics.prefix}-usage"
    stop = threading.Event()
    applier = UsageApplier(
        store.engine, lambda: UsageConsumer(kafka_bootstrap, topics.usage, group), KEYRING
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            applier.run(stop)
        except BaseException as e:  # the finding: the applier's thread dies
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(10)


def test_a_forged_usage_record_changes_nothing(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    """Issue 13 item 6: 'usage records from regions are authenticated (a forged usage record
    changes nothing and is counted)'. Usage records carry no MAC and the applier takes any
    JSON: whoever can write the usage topic pins a token's last_used_at at year 9999 (it
    only moves forward, so every real use is hidden from then on: a responder's
    'token find' shows a lie)."""
    victim = store.issue(USER, 1, "victim")
    produce(
        kafka_bootstrap, topics.usage, {"region": "eu", "usage": {str(victim.id): YEAR_9999_MS}}
    )
    with applying(store, kafka_bootstrap, topics):
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and store.get(victim.id).last_used_at is None:
            time.sleep(0.1)
    assert store.get(victim.id).last_used_at is None, (
        f"an unsigned usage record set last_used_at to {store.get(victim.id).last_used_at}"
    )


def test_one_usage_record_past_year_9999_does_not_stop_the_applier(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    """A value past year 9999 raises ValueError in apply_usage, outside the applier's
    except clause (PublishError, SQLAlchemyError): its thread dies, and the uncommitted
    record kills it again after every restart. last_used_at stops moving everywhere."""
    other = store.issue(USER, 2, "other")
    report = UsageReport("eu", int(time.time() * 1000), {other.id: 10**18}).to_json()
    produce(kafka_bootstrap, topics.usage, report, signed=True)
    with applying(store, kafka_bootstrap, topics) as errors:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not errors:
            time.sleep(0.1)
        assert not errors, f"one usage record stopped the applier: {errors[0]!r}"
