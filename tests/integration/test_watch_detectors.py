"""The watch on each store (SQLite, PostgreSQL, MariaDB): usage from real validators in
two regions reaches the usage window, and each detector fires on its anomaly only."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from producer.detectors import Detector, Watch, WatchSettings
from producer.models import PAT
from producer.store import TokenStore
from producer.watch_tables import FINDINGS, USAGE_WINDOW
from shared.events import TokenOp
from shared.usage import UsageReport
from shared.validator import Outcome
from tests.integration.watch_helpers import BROWSER, Traffic
from tests.region_helpers import USER, now_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def traffic(region_urls: dict[str, str]) -> Iterator[Traffic]:
    traffic = Traffic(region_urls)
    yield traffic
    traffic.close()


def _unknown(n: int) -> str:
    """A well-formed Sanctum token nobody issued."""
    from shared.tokenformat import checksum

    body = f"{n:040d}".replace("0", "a")
    return f"{900000 + n}|{body}{checksum(body)}"


def _rows(store: TokenStore) -> list[sa.RowMapping]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(USAGE_WINDOW).order_by(USAGE_WINDOW.c.id)).mappings())


def _findings(store: TokenStore) -> list[sa.RowMapping]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(FINDINGS).order_by(FINDINGS.c.id)).mappings())


def test_usage_reaches_the_window_per_outcome_region_and_client_keeping_only_hash_prefixes(
    store: TokenStore, traffic: Traffic
) -> None:
    used = store.issue(USER, 1, "used", abilities=["orders:read"])
    traffic.put(used)
    assert [Outcome.VALID] * 3 == traffic.present("eu", used.plain_text_token, 3)
    assert [Outcome.FORBIDDEN] == traffic.present(
        "eu", used.plain_text_token, abilities=("orders:write",)
    )
    traffic.present("us", used.plain_text_token, 2, client=BROWSER)
    unknown = _unknown(1)
    assert [Outcome.INVALID] * 4 == traffic.present("eu", unknown, 4)

    reports = traffic.forward()
    Watch(store, WatchSettings()).ingest(reports)

    rows = _rows(store)
    token_rows = {
        (r["region"], r["client"]): (r["valid"], r["forbidden"], r["denied"])
        for r in rows
        if r["token_id"] == used.id
    }
    assert {
        ("eu", "198.51.100.0/24 curl"): (3, 1, 0),
        ("us", "203.0.113.0/24 firefox"): (2, 0, 0),
    } == token_rows
    secret = unknown.split("|", 1)[1]
    invalid = [
        (r["region"], r["client"], r["hash_prefix"], r["invalid"])
        for r in rows
        if r["token_id"] is None
    ]
    assert [
        ("eu", "198.51.100.0/24 curl", hashlib.sha256(secret.encode()).hexdigest()[:8], 4)
    ] == invalid
    stored = repr(rows) + repr([r.to_json() for r in reports])
    assert secret not in stored and secret[:12] not in stored, "no presented token is kept"
    assert used.plain_text_token.split("|", 1)[1][:12] not in stored


def test_a_token_used_in_two_regions_within_minutes_is_found_once_unless_used_so_before(
    store: TokenStore, traffic: Traffic
) -> None:
    single = store.issue(USER, 1, "single-region history")
    roaming = store.issue(USER, 2, "multi-region history")
    for token in (single, roaming):
        traffic.put(token)
    hour_ago = now_ms() - 3_600_000
    watch = Watch(store, WatchSettings())
    watch.ingest(  # an hour ago: single used only in eu, roaming in eu and us
        [
            UsageReport("eu", hour_ago, {single.id: hour_ago, roaming.id: hour_ago}),
            UsageReport("us", hour_ago, {roaming.id: hour_ago}),
        ]
    )
    assert [] == _findings(store)
    for region in ("eu", "us"):
        traffic.present(region, single.plain_text_token, 2)
        traffic.present(region, roaming.plain_text_token, 2)
    raised = watch.ingest(traffic.forward())

    assert [(Detector.MULTI_REGION, f"token:{single.id}")] == [
        (f.detector, f.subject) for f in raised
    ]
    assert {"eu": 2, "us": 2} == raised[0].evidence["regions"]
    assert ["eu"] == raised[0].evidence["history_regions"]
    traffic.present("eu", single.plain_text_token)
    traffic.present("us", single.plain_text_token)
    assert [] == watch.ingest(traffic.forward()), "one finding per subject and cooldown"
    assert 1 == len(_findings(store))


def test_a_token_unused_for_thirty_days_that_answers_again_is_found_and_a_recently_used_one_is_not(
    store: TokenStore, traffic: Traffic
) -> None:
    sleeper = store.issue(USER, 1, "sleeper")
    daily = store.issue(USER, 1, "daily")
    for token, days in ((sleeper, 40), (daily, 1)):
        traffic.put(token)
        with store.engine.begin() as conn:
            conn.execute(
                PAT.update()
                .where(PAT.c.id == token.id)
                .values(
                    last_used_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)
                    - dt.timedelta(days=days)
                )
            )
    traffic.present("eu", sleeper.plain_text_token, 3)
    traffic.present("eu", daily.plain_text_token, 3)

    raised = Watch(store, WatchSettings()).ingest(traffic.forward())

    assert [(Detector.DORMANT, sleeper.id)] == [(f.detector, f.token_id) for f in raised]
    assert 39.9 <= raised[0].evidence["idle_days"] <= 40.1
    assert 3 == raised[0].evidence["requests"]
    assert (USER, "1") == raised[0].principal


def test_a_rotated_token_presented_after_its_grace_is_found_with_its_replacement(
    store: TokenStore, traffic: Traffic
) -> None:
    old = store.issue(USER, 1, "rotated at once")
    graced = store.issue(USER, 2, "rotated with a grace")
    untouched = store.issue(USER, 3, "revoked, never rotated")
    replacement = store.rotate(old.id, grace_seconds=0)
    store.rotate(graced.id, grace_seconds=1)
    store.revoke_token(untouched.id)
    traffic.put(old, TokenOp.REVOKED)  # a tombstone: it names no token id
    traffic.put(graced, expires_at=now_ms() + 1000)
    traffic.put(untouched, TokenOp.REVOKED)
    assert [Outcome.VALID] == traffic.present("eu", graced.plain_text_token), "in its grace"
    time.sleep(1.2)  # the grace ends
    assert [Outcome.INVALID] * 5 == traffic.present("us", old.plain_text_token, 5)
    assert [Outcome.INVALID] * 2 == traffic.present("eu", graced.plain_text_token, 2)
    traffic.present("us", untouched.plain_text_token, 5)

    raised = Watch(store, WatchSettings()).ingest(traffic.forward())

    assert [(Detector.AFTER_ROTATION, old.id), (Detector.AFTER_ROTATION, graced.id)] == [
        (f.detector, f.token_id) for f in raised
    ]
    evidence = raised[0].evidence
    assert (5, replacement.id, 0) == (
        evidence["denied"],
        evidence["replacement_id"],
        evidence["grace_seconds"],
    )
    assert [["198.51.100.0/24 curl", 5]] == evidence["clients"]
    assert (2, 1) == (raised[1].evidence["denied"], raised[1].evidence["grace_seconds"])


def test_a_burst_of_invalid_tokens_is_found_per_client_and_per_region_above_their_thresholds(
    store: TokenStore, traffic: Traffic
) -> None:
    settings = WatchSettings().with_detector(
        Detector.INVALID_BURST, threshold=20, region_threshold=30
    )
    for n in range(25):
        traffic.present("eu", _unknown(n))  # the stuffer: 25 different tokens
    traffic.present("eu", _unknown(99), 8, client=BROWSER)  # someone with a stale token
    traffic.present("us", _unknown(98), 8, client=BROWSER)

    raised = Watch(store, settings).ingest(traffic.forward())

    assert {"client:198.51.100.0/24 curl", "region:eu"} == {f.subject for f in raised}
    by_client = next(f for f in raised if f.subject.startswith("client:"))
    assert 25 == by_client.evidence["invalid"]
    assert 25 == by_client.evidence["distinct_prefixes"]
    assert 33 == next(f for f in raised if f.subject == "region:eu").evidence["invalid"]


def test_a_principal_issued_many_tokens_within_the_window_is_found_and_a_steady_one_is_not(
    store: TokenStore,
) -> None:
    settings = WatchSettings().with_detector(Detector.PRINCIPAL_JUMP, threshold=5)
    for n in range(6):
        store.issue(USER, 7, f"burst {n}")
    for n in range(2):
        store.issue(USER, 8, f"steady {n}")

    raised = Watch(store, settings).tick(force=True)

    assert [(Detector.PRINCIPAL_JUMP, (USER, "7"))] == [(f.detector, f.principal) for f in raised]
    assert 6 == raised[0].evidence["issued"]


def test_a_detector_turned_off_finds_nothing(store: TokenStore, traffic: Traffic) -> None:
    settings = WatchSettings().with_detector(Detector.MULTI_REGION, enabled=False)
    token = store.issue(USER, 1, "roaming")
    traffic.put(token)
    for region in ("eu", "us"):
        traffic.present(region, token.plain_text_token)
    assert [] == Watch(store, settings).ingest(traffic.forward())
