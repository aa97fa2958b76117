"""Usage without a write per request: validators -> region Redis -> worker -> Kafka -> store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import sqlalchemy as sa
from kafka import KafkaProducer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from producer.api import create_app
from producer.kafka_io import KafkaAdmin, UsageConsumer
from producer.store import TokenStore
from producer.usage import UsageApplier
from shared.events import Keyring
from shared.keys import Topics
from shared.settings import Settings
from shared.usage import encode_usage_reports
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.http_helpers import serving
from tests.kafka_helpers import KEYRING, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
Headers = list[tuple[str, bytes]]


def test_last_used_at_is_updated_in_batches_without_publishing_anything(pipeline: Pipeline) -> None:
    pipeline.settings = pipeline.settings.with_overrides(usage_interval_s=0.5)
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    used = pipeline.store.issue(USER, 1, "used")
    unused = pipeline.store.issue(USER, 1, "unused")
    pipeline.wait_applied(unused.seq)

    stop = threading.Event()
    applier = UsageApplier(
        pipeline.store.engine,
        lambda: UsageConsumer(
            pipeline.settings.kafka_bootstrap,
            pipeline.topics.usage,
            f"{pipeline.topics.prefix}-usage",
        ),
        KEYRING,
    )
    thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
    thread.start()
    validator = pipeline.validator("eu")
    # An interval no test outlives: nothing leaves the process until the flush below.
    recorder = validator.enable_usage(interval_s=3600)
    try:
        with pipeline.store.engine.connect() as conn:
            outbox_before = conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar()
        for _ in range(50):
            assert Outcome.VALID == validator.validate(used.plain_text_token).outcome
        region = pipeline.redis("eu")
        try:
            assert 0 == region.exists(validator.keys.usage), "no write to the region per request"
        finally:
            region.close()
        assert 1 == recorder.flush(), "50 uses of one token leave the process as one entry"
        wait_for(
            lambda: pipeline.store.get(used.id).last_used_at is not None, 30, "last_used_at written"
        )
        assert pipeline.store.get(unused.id).last_used_at is None
        with pipeline.store.engine.connect() as conn:
            outbox_after = conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar()
        assert outbox_before == outbox_after, "usage updates publish nothing"
    finally:
        validator.close()
        stop.set()
        thread.join(10)


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, Headers]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _report(usage: dict[int, int], keyring: Keyring = KEYRING) -> tuple[bytes, bytes, Headers]:
    [record] = encode_usage_reports("eu", usage, int(time.time() * 1000), keyring)
    return record


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("tokensync_usage_reports_total", {"outcome": outcome}) or 0.0


@contextmanager
def _applying(store: TokenStore, bootstrap: str, topics: Topics) -> Iterator[threading.Thread]:
    """The store's usage applier in a thread (as the relay process runs it)."""
    stop = threading.Event()
    applier = UsageApplier(
        store.engine,
        lambda: UsageConsumer(bootstrap, topics.usage, f"{topics.prefix}-usage"),
        KEYRING,
    )
    thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(15)


def _ensure_topics(bootstrap: str, topics: Topics) -> None:
    admin = KafkaAdmin(bootstrap)
    try:
        admin.ensure_topics(topics, 3)
    finally:
        admin.close()


def test_a_forged_usage_report_changes_nothing_is_counted_and_logged_and_metrics_name_no_token(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    _ensure_topics(kafka_bootstrap, topics)
    victim = store.issue(USER, 1, "victim")
    witness = store.issue(USER, 1, "witness")
    now = int(time.time() * 1000)
    key, value, headers = _report({victim.id: now})
    other_key = Keyring({"test-1": b"not the key" * 3}, "test-1")
    altered = value.replace(str(victim.id).encode() + b'"', str(witness.id).encode() + b'"')
    forged = [
        (key, value, []),  # unsigned
        _report({victim.id: now}, other_key),  # signed with a key the store does not hold
        (key, altered, headers),  # altered after signing
    ]
    before = _count("forged")
    with capture_logs() as logs:
        _produce(kafka_bootstrap, topics.usage, [*forged, _report({witness.id: now})])
        with _applying(store, kafka_bootstrap, topics):
            wait_for(lambda: store.get(witness.id).last_used_at is not None, 30, "witness used")
    assert store.get(victim.id).last_used_at is None
    assert 3 == _count("forged") - before
    rejected = [e for e in logs if e["event"] == "usage_report_rejected"]
    assert ["forged"] * 3 == [e["reason"] for e in rejected]

    with serving(create_app(Settings(), store)) as url:
        response = httpx.get(f"{url}/metrics")  # no token needed
    assert 200 == response.status_code
    assert 'tokensync_usage_reports_total{outcome="forged"}' in response.text
    secrets = {victim.token_hash[:12], victim.plain_text_token.split("|")[1][:12]}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                assert label not in {"token", "token_id", "token_hash", "hash", "id"}, sample
                assert not any(s in label_value for s in secrets), sample
                if family.name.startswith("tokensync") and label not in {"le", "quantile"}:
                    assert not label_value.isdigit(), sample  # a token id


def test_a_usage_report_with_an_out_of_range_time_is_dropped_counted_and_never_read_again(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    _ensure_topics(kafka_bootstrap, topics)
    victim, first, second = (store.issue(USER, 1, n) for n in ("victim", "first", "second"))
    now = int(time.time() * 1000)
    before = _count("out_of_range")
    bad = [
        _report({victim.id: 10**15}),  # year 33658: no datetime holds it
        _report({victim.id: now + 24 * 3600 * 1000}),  # tomorrow: it would stick forever
    ]
    _produce(kafka_bootstrap, topics.usage, [*bad, _report({first.id: now})])
    with _applying(store, kafka_bootstrap, topics) as thread:
        wait_for(lambda: store.get(first.id).last_used_at is not None, 30, "first used")
        assert thread.is_alive()
    assert store.get(victim.id).last_used_at is None
    assert 2 == _count("out_of_range") - before

    # A restarted applier (same group) does not read them again: the offsets were committed.
    _produce(kafka_bootstrap, topics.usage, [_report({second.id: now})])
    with _applying(store, kafka_bootstrap, topics) as thread:
        wait_for(lambda: store.get(second.id).last_used_at is not None, 30, "second used")
        assert thread.is_alive()
    assert store.get(victim.id).last_used_at is None
    assert 2 == _count("out_of_range") - before
