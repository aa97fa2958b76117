"""The watch end to end: validators in two regions -> their workers -> the usage topic ->
the store's usage reader and its detectors -> the webhook and the reaction, which the
regions enforce (real Kafka, Redis, workers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from functools import partial

import pytest
from kafka import KafkaProducer
from structlog.testing import capture_logs

from producer import audit as audit_log
from producer.detectors import (
    Detector,
    Reaction,
    Watch,
    WatchSettings,
    WebhookNotifier,
    read_findings,
)
from producer.detectors.findings import Finding
from producer.detectors.webhook import SIGNATURE_HEADER, verify
from producer.kafka_io import KafkaAdmin, UsageConsumer
from producer.store import TokenStore
from producer.usage import UsageApplier
from shared.keys import Topics
from shared.usage import CLIENT, UsageReport, client_fingerprint, encode_usage_reports
from shared.validator import Outcome, Validator
from tests.harness import Pipeline
from tests.integration.watch_helpers import receiving
from tests.kafka_helpers import KEYRING, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
SECRET = b"webhook-secret-of-this-test"


def test_a_token_used_in_two_regions_is_found_posted_and_revoked_in_every_region(
    pipeline: Pipeline,
) -> None:
    regions = tuple(r for r in pipeline.settings.regions if r.name in {"eu", "us"})
    pipeline.settings = pipeline.settings.with_overrides(usage_interval_s=0.5, regions=regions)
    pipeline.start_relay()
    for name in ("eu", "us"):
        pipeline.start_worker(name)
    for name in ("eu", "us"):
        pipeline.wait_ready(name)
    stolen = pipeline.store.issue(USER, 1, "stolen")
    pipeline.wait_applied(stolen.seq)
    settings = WatchSettings().with_detector(Detector.MULTI_REGION, reaction=Reaction.REVOKE_TOKEN)
    validators = {name: pipeline.validator(name) for name in ("eu", "us")}
    stop = threading.Event()
    with receiving() as receiver:
        notifier = WebhookNotifier(receiver.url, SECRET, pipeline.store.engine).start()
        watch = Watch(pipeline.store, settings, receipts=pipeline.settings, notifier=notifier)
        applier = UsageApplier(
            pipeline.store.engine,
            lambda: UsageConsumer(
                pipeline.settings.kafka_bootstrap,
                pipeline.topics.usage,
                f"{pipeline.topics.prefix}-usage",
            ),
            KEYRING,
            watch=watch,
        )
        thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
        thread.start()
        try:
            for name, ip in (("eu", "198.51.100.7"), ("us", "203.0.113.9")):
                recorder = validators[name].enable_usage(interval_s=3600)
                mark = CLIENT.set(client_fingerprint(ip, "python-requests/2.32"))
                try:
                    outcomes = [
                        validators[name].validate(stolen.plain_text_token) for _ in range(3)
                    ]
                finally:
                    CLIENT.reset(mark)
                assert [Outcome.VALID] * 3 == [r.outcome for r in outcomes]
                recorder.flush()
            receiver.wait(1, timeout_s=60)
            for name in ("eu", "us"):
                wait_for(partial(_denied, validators[name], stolen.plain_text_token), 30, name)
            wait_for(
                lambda: any(
                    e.receipt
                    for e in audit_log.read(
                        pipeline.store.engine, actor="detector:multi_region", action="token.revoke"
                    )
                ),
                40,
                "the revocation's receipt attached to its audit record",
            )
        finally:
            stop.set()
            thread.join(15)
            notifier.stop()
            for validator in validators.values():
                validator.close()

    [finding] = read_findings(pipeline.store.engine)
    assert (Detector.MULTI_REGION, stolen.id) == (finding.detector, finding.token_id)
    assert {"eu": 3, "us": 3} == finding.evidence["regions"]
    clients = {c for c, _ in finding.evidence["clients"]}
    assert {"198.51.100.0/24 python-requests", "203.0.113.0/24 python-requests"} == clients
    assert finding.outcome is not None
    assert finding.outcome.startswith(f"revoked token {stolen.id}; enforced in 2/2 regions")
    headers, body = receiver.received[0]
    assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    assert finding.id == json.loads(body)["finding"]["id"]
    [revoke] = audit_log.read(
        pipeline.store.engine, actor="detector:multi_region", action="token.revoke"
    )
    assert revoke.receipt is not None
    assert revoke.receipt["summary"].startswith("enforced in 2/2 regions")


def _denied(validator: Validator, token: str) -> bool:
    return validator.validate(token).outcome is Outcome.INVALID


def test_a_watch_that_fails_never_holds_up_last_used_at(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    class Broken(Watch):
        def ingest(self, reports: Sequence[UsageReport]) -> list[Finding]:
            raise RuntimeError("a detector's bug")

    admin = KafkaAdmin(kafka_bootstrap)
    try:
        admin.ensure_topics(topics, 3)
    finally:
        admin.close()
    used = store.issue(USER, 1, "used")
    now = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for key, value, headers in encode_usage_reports("eu", {used.id: now}, now, KEYRING):
            producer.send(topics.usage, key=key, value=value, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close()
    stop = threading.Event()
    applier = UsageApplier(
        store.engine,
        lambda: UsageConsumer(kafka_bootstrap, topics.usage, f"{topics.prefix}-usage"),
        KEYRING,
        watch=Broken(store, WatchSettings()),
    )
    thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
    with capture_logs() as logs:
        thread.start()
        try:
            wait_for(lambda: store.get(used.id).last_used_at is not None, 30, "last_used_at")
        finally:
            stop.set()
            thread.join(15)
    assert "watch_step_failed" in [e["event"] for e in logs]
