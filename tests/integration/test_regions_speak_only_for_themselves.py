"""Issue 20 item 3: regions speak only for themselves. A region signs its usage reports
with a key of its own; the store attributes each report to its signer and refuses one
that claims another region (real Kafka, the store on SQLite, PostgreSQL and MariaDB; the
genuine path through real workers and Redis)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer
from structlog.testing import capture_logs

from producer.detectors import Watch, WatchSettings, read_findings
from producer.kafka_io import KafkaAdmin, UsageConsumer
from producer.store import TokenStore
from producer.usage import UsageApplier
from producer.watch_tables import USAGE_WINDOW
from shared.keys import Topics
from shared.metrics import USAGE_REPORTS
from shared.region_keys import CoSigned, RegionKey, RegionKeys, Signer
from shared.usage import CLIENT, TokenUse, client_fingerprint, encode_usage_reports
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import KEYRING, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
EU = RegionKey("eu-1", b"eu-secret-of-this-test-0123456789")
US = RegionKey("us-1", b"us-secret-of-this-test-0123456789")
REGION_KEYS = RegionKeys({"eu": {EU.kid: EU.secret}, "us": {US.kid: US.secret}})
CLIENT_EU = "198.51.100.0/24 curl"
CLIENT_US = "203.0.113.0/24 curl"


def send(
    kafka_bootstrap: str, topics: Topics, reports: Sequence[tuple[str, int, int, Signer]]
) -> None:
    """(region claimed, token id, use ms, signer) as usage records, in this order, on a
    usage topic of one partition (so the last one read means all were)."""
    admin = KafkaAdmin(kafka_bootstrap)
    try:
        admin.ensure_topics(topics, 1)
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for region, token_id, at, signer in reports:
            client = CLIENT_US if region == "us" else CLIENT_EU
            for key, value, headers in encode_usage_reports(
                region, {token_id: at}, at, signer, tokens={token_id: TokenUse({client: (5, 0, 0)})}
            ):
                producer.send(topics.usage, key=key, value=value, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close()


@contextmanager
def applying(
    store: TokenStore, kafka_bootstrap: str, topics: Topics, region_keys: RegionKeys
) -> Iterator[None]:
    """The store's usage applier, with the watch (multi-region detector on), on a thread."""
    stop = threading.Event()
    applier = UsageApplier(
        store.engine,
        lambda: UsageConsumer(kafka_bootstrap, topics.usage, f"{topics.prefix}-usage"),
        KEYRING,
        watch=Watch(store, WatchSettings()),
        region_keys=region_keys,
    )
    thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


def window(store: TokenStore) -> set[tuple[int, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(USAGE_WINDOW.c.token_id, USAGE_WINDOW.c.region)).all()
    return {(int(t), str(r)) for t, r in rows}


def used(store: TokenStore, token_id: int) -> bool:
    return store.get(token_id).last_used_at is not None


def windowed(store: TokenStore, token_id: int, region: str) -> bool:
    return (token_id, region) in window(store)


def at_second(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).replace(tzinfo=None)


def forged_count() -> float:
    return float(USAGE_REPORTS.labels("forged")._value.get())


def refused_before_genuine(
    store: TokenStore, kafka_bootstrap: str, topics: Topics, forger: Signer, claims: str
) -> list[MutableMapping[str, Any]]:
    """A report claiming ``claims`` signed by ``forger`` for a token, then eu's genuine
    report for it (older use): only the genuine one moves anything. Returns the logs."""
    token = store.issue(USER, 1, "victim")
    now = int(time.time() * 1000)
    genuine_at, forged_at = now - 60_000, now
    before = forged_count()
    send(
        kafka_bootstrap,
        topics,
        [
            (claims, token.id, forged_at, forger),
            ("eu", token.id, genuine_at, CoSigned(KEYRING, EU)),
        ],
    )
    with capture_logs() as logs, applying(store, kafka_bootstrap, topics, REGION_KEYS):
        wait_for(lambda: store.get(token.id).last_used_at is not None, 30, "eu's genuine report")
        wait_for(lambda: (token.id, "eu") in window(store), 30, "eu's usage window row")
    assert at_second(genuine_at) == store.get(token.id).last_used_at, "the forged use moved it"
    assert {(token.id, "eu")} == window(store), "the forged report reached the usage window"
    assert [] == read_findings(store.engine), "a forged region made a finding"
    assert 1 == forged_count() - before
    return logs


def test_a_report_signed_with_eus_key_claiming_us_is_refused_and_moves_nothing(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    """A compromised eu signs with everything it holds (its own key and the shared
    keyring) a report that claims region us: no last_used_at, no window row, no finding."""
    logs = refused_before_genuine(store, kafka_bootstrap, topics, CoSigned(KEYRING, EU), "us")
    [wrong] = [e for e in logs if e["event"] == "usage_report_wrong_region"]
    assert ("forged", "us") == (wrong["reason"], wrong["claimed_region"])
    assert "region eu's key" in wrong["detail"]


def test_a_report_signed_only_with_the_shared_keyring_is_refused_once_region_keys_are_on(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    """Every region holds the keyring: once us has a key of its own, a keyring-signed
    report claiming us is refused."""
    logs = refused_before_genuine(store, kafka_bootstrap, topics, KEYRING, "us")
    assert ["us"] == [
        e["claimed_region"] for e in logs if e["event"] == "usage_report_wrong_region"
    ]


def test_a_report_signed_by_a_region_key_the_store_does_not_know_is_refused(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    stranger = RegionKey("eu-2", b"a-key-the-store-was-never-given!")
    logs = refused_before_genuine(store, kafka_bootstrap, topics, CoSigned(KEYRING, stranger), "eu")
    [rejected] = [e for e in logs if e["event"] == "usage_report_rejected"]
    assert "unknown region key id" in rejected["detail"]


def test_a_region_without_a_key_of_its_own_is_still_heard_under_the_keyring(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    """The migration: region ap has no key yet, so its keyring-signed reports still count."""
    token = store.issue(USER, 1, "ap's")
    now = int(time.time() * 1000)
    send(kafka_bootstrap, topics, [("ap", token.id, now, KEYRING)])
    with applying(store, kafka_bootstrap, topics, REGION_KEYS):
        wait_for(lambda: (token.id, "ap") in window(store), 30, "ap's usage window row")
    assert at_second(now) == store.get(token.id).last_used_at


def test_a_genuine_report_from_each_region_is_applied_and_attributed_to_its_signer(
    pipeline: Pipeline,
) -> None:
    """Workers in eu and us, each given its own key (their entries of REGION_KEYS), forward
    what their validators saw; the store applies both and attributes each to its region."""
    regions = tuple(r for r in pipeline.settings.regions if r.name in {"eu", "us"})
    pipeline.settings = pipeline.settings.with_overrides(
        usage_interval_s=0.5, regions=regions, region_keys=REGION_KEYS
    )
    pipeline.start_relay()
    for name in ("eu", "us"):
        pipeline.start_worker(name)
    for name in ("eu", "us"):
        pipeline.wait_ready(name)
    tokens = {name: pipeline.store.issue(USER, 1, name) for name in ("eu", "us")}
    pipeline.wait_applied(max(t.seq for t in tokens.values()))
    store = pipeline.store
    with applying(store, pipeline.settings.kafka_bootstrap, pipeline.topics, REGION_KEYS):
        for name, token in tokens.items():
            validator = pipeline.validator(name)
            try:
                recorder = validator.enable_usage(interval_s=3600)
                mark = CLIENT.set(client_fingerprint("198.51.100.7", "curl/8"))
                try:
                    assert Outcome.VALID is validator.validate(token.plain_text_token).outcome
                finally:
                    CLIENT.reset(mark)
                recorder.flush()
            finally:
                validator.close()
        for name, token in tokens.items():
            wait_for(partial(used, store, token.id), 60, f"{name}'s last_used_at")
            wait_for(partial(windowed, store, token.id, name), 30, f"{name}'s window row")
    assert {(tokens["eu"].id, "eu"), (tokens["us"].id, "us")} == window(store)
