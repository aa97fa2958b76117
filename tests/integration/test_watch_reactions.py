"""Findings leave the store: a signed webhook delivery that retries until the receiver
takes it, and reaction policies that revoke through the normal path (SQLite,
PostgreSQL, MariaDB)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer.detectors import (
    Detector,
    Reaction,
    Watch,
    WatchSettings,
    WebhookNotifier,
    plan_reactions,
    read_findings,
)
from producer.detectors.webhook import SIGNATURE_HEADER, verify
from producer.models import PAT
from producer.records import IssuedToken
from producer.store import TokenStore
from shared.errors import NotFoundError
from tests.integration.watch_helpers import Traffic, receiving
from tests.kafka_helpers import wait_for
from tests.region_helpers import USER

pytestmark = pytest.mark.integration
SECRET = b"webhook-secret-of-this-test"


@pytest.fixture
def traffic(region_urls: dict[str, str]) -> Iterator[Traffic]:
    traffic = Traffic(region_urls)
    yield traffic
    traffic.close()


def _asleep(store: TokenStore, token: IssuedToken, days: int = 40) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            PAT.update()
            .where(PAT.c.id == token.id)
            .values(
                last_used_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days)
            )
        )


def test_a_finding_is_posted_to_the_webhook_signed_and_retried_with_backoff_until_delivered(
    store: TokenStore, traffic: Traffic
) -> None:
    sleeper = store.issue(USER, 1, "sleeper")
    traffic.put(sleeper)
    _asleep(store, sleeper)
    with receiving(fail_first=2) as receiver:
        notifier = WebhookNotifier(receiver.url, SECRET, store.engine, backoff_s=0.05).start()
        try:
            traffic.present("eu", sleeper.plain_text_token)
            [finding] = Watch(store, WatchSettings(), notifier=notifier).ingest(traffic.forward())
            receiver.wait(1)
        finally:
            notifier.stop()
    assert 3 == receiver.attempts, "two refusals, then delivered"
    headers, body = receiver.received[0]
    assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    assert not verify(b"another secret entirely", headers[SIGNATURE_HEADER.lower()], body)
    assert not verify(SECRET, headers[SIGNATURE_HEADER.lower()], body + b" ")
    sent = json.loads(body)
    assert ("finding", finding.id, "dormant") == (
        sent["event"],
        sent["finding"]["id"],
        sent["finding"]["detector"],
    )
    assert sleeper.plain_text_token.split("|", 1)[1][:12] not in body.decode()
    wait_for(
        lambda: read_findings(store.engine)[0].delivered_at_ms is not None,
        10,
        "the delivery recorded on the finding",
    )


def test_a_webhook_that_never_answers_2xx_gets_its_attempts_and_the_finding_stays_stored(
    store: TokenStore,
) -> None:
    settings = WatchSettings().with_detector(Detector.PRINCIPAL_JUMP, threshold=3)
    for n in range(3):
        store.issue(USER, 5, f"t{n}")
    with receiving(fail_first=100) as receiver:
        notifier = WebhookNotifier(
            receiver.url, SECRET, store.engine, attempts=3, backoff_s=0.05
        ).start()
        try:
            Watch(store, settings, notifier=notifier).tick(force=True)
            wait_for(lambda: receiver.attempts >= 3, 10, "three attempts")
        finally:
            notifier.stop()
    [stored] = read_findings(store.engine)
    assert (3, None) == (receiver.attempts, stored.delivered_at_ms)


def test_a_revoke_token_policy_revokes_through_the_normal_path_with_the_detector_as_actor(
    store: TokenStore, traffic: Traffic
) -> None:
    settings = WatchSettings().with_detector(Detector.DORMANT, reaction=Reaction.REVOKE_TOKEN)
    sleeper = store.issue(USER, 1, "sleeper")
    bystander = store.issue(USER, 1, "bystander")
    traffic.put(sleeper)
    _asleep(store, sleeper)
    traffic.present("eu", sleeper.plain_text_token, 2)

    [finding] = Watch(store, settings).ingest(traffic.forward())

    with pytest.raises(NotFoundError):
        store.get(sleeper.id)
    assert bystander.id == store.get(bystander.id).id
    entries = audit_log.read(store.engine, actor="detector:dormant")
    assert ["finding.dormant", "token.revoke"] == [e.action for e in entries]
    revoke = entries[1]
    assert (sleeper.id, finding.seq) == (revoke.token_id, revoke.seq)
    assert revoke.reason is not None
    assert revoke.reason.startswith(f"finding {finding.id}: token {sleeper.id} active again")
    assert f"revoked token {sleeper.id}" == read_findings(store.engine)[0].outcome


def test_a_revoke_principal_policy_revokes_every_token_of_the_principal_and_no_other(
    store: TokenStore,
) -> None:
    settings = WatchSettings().with_detector(
        Detector.PRINCIPAL_JUMP, threshold=4, reaction=Reaction.REVOKE_PRINCIPAL
    )
    for n in range(4):
        store.issue(USER, 9, f"burst {n}")
    other = store.issue(USER, 10, "other")

    [finding] = Watch(store, settings).tick(force=True)

    assert [] == store.list_tokens(USER, 9)
    assert [other.id] == [t.id for t in store.list_tokens(USER, 10)]
    [revoke] = audit_log.read(
        store.engine, actor="detector:principal_jump", action="revoke.principal"
    )
    assert finding.seq == revoke.seq
    assert finding.outcome == f"revoked principal {USER}:9 (4 tokens)"


def test_a_dry_run_shows_what_a_policy_would_have_revoked_in_the_stored_window_revoking_nothing(
    store: TokenStore, traffic: Traffic
) -> None:
    sleeper = store.issue(USER, 1, "sleeper")
    traffic.put(sleeper)
    _asleep(store, sleeper)
    traffic.present("eu", sleeper.plain_text_token)
    watch = Watch(store, WatchSettings())  # alert only
    watch.ingest(traffic.forward())
    outbox = _outbox_rows(store)

    [alert] = plan_reactions(store, WatchSettings(), since_ms=0)
    [plan] = plan_reactions(
        store, WatchSettings(), since_ms=0, policies={Detector.DORMANT: Reaction.REVOKE_TOKEN}
    )

    assert (Reaction.ALERT, None) == (alert.reaction, alert.target)
    assert (Reaction.REVOKE_TOKEN, f"token:{sleeper.id}", True) == (
        plan.reaction,
        plan.target,
        plan.live,
    )
    assert sleeper.id == store.get(sleeper.id).id
    assert outbox == _outbox_rows(store), "a dry run publishes nothing"


def _outbox_rows(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar_one())
