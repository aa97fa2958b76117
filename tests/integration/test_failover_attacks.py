"""Attacks on relay failover and fencing (issue 17): an operator who deletes the lease row
or restores an older backup of it, and a forged ``ts-fence`` header (it is not covered by
the HMAC). Real store, Kafka and Redis; deterministic (no pausing of processes)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from producer.publisher import OutgoingRecord, Placement
from producer.relay_lease import LeaseLostError, RelayLease
from shared.outcomes import Outcome
from tests.fencing_helpers import (
    WrappedPublisher,
    kafka_publisher,
    lead_region,
    lease_relay,
    old_and_new,
)
from tests.harness import Pipeline
from tests.kafka_helpers import Consumed, read_topic, wait_for

USER = "App\\Models\\User"


def _bump_epoch(engine: sa.Engine, times: int) -> None:
    """Take-overs that published nothing (relays started and stopped cleanly)."""
    for i in range(times):
        lease = RelayLease(engine, f"bump-{i}")
        assert lease.acquire() is not None
        lease.release()


@pytest.mark.parametrize("edit", ["deleted", "restored_from_backup"])
def test_a_lease_row_deleted_or_restored_from_a_backup_never_makes_a_region_refuse_a_revocation(
    any_pipeline: Pipeline, edit: str
) -> None:
    pipeline = any_pipeline
    engine = pipeline.store.engine
    _bump_epoch(engine, 4)
    first = lease_relay(pipeline, "first")
    second = lease_relay(pipeline, "second")
    validator = pipeline.validator("eu")
    try:
        lead_region(pipeline, first)  # epoch 5: the region sees it
        token = pipeline.store.issue(USER, 1, "victim")
        assert 1 == first.publish_batch()
        first.heartbeat()
        wait_for(
            lambda: validator.validate(token.plain_text_token).outcome is Outcome.VALID,
            30,
            "the token valid in eu",
        )
        first.close()  # the first relay dies (its lease expires by itself)
        with engine.begin() as conn:  # the operator's edit of the lease row
            if edit == "deleted":
                conn.execute(sa.text("DELETE FROM tokensync_relay_lease"))
            else:  # a backup taken when the epoch was 1, restored over the row
                conn.execute(
                    sa.text(
                        "UPDATE tokensync_relay_lease SET holder = '', epoch = 1, "
                        " expires_at_ms = 0,"
                        " acquired_at_ms = 0"
                    )
                )
        wait_for(second.lease_step, 10, "the second relay takes the lease")
        assert pipeline.store.revoke_token(token.id).seq > token.seq
        assert 1 == second.publish_batch()

        def revoked_in_eu() -> bool:
            second.heartbeat()
            return validator.validate(token.plain_text_token).outcome is Outcome.INVALID

        wait_for(revoked_in_eu, 20, "the revocation applied in eu")
    finally:
        validator.close()
        first.close()
        second.close()


FORGED = b"999999999999999999"  # the highest epoch a header may carry


def _replay_with_forged_fence(
    pipeline: Pipeline, records: list[Consumed], producer: KafkaProducer
) -> None:
    """What an attacker who can write to the topic (but holds no signing key) does: send
    genuine signed records again with a fencing epoch of their choosing."""
    for record in records:
        headers = [(n, v) for n, v in record.headers if n != "ts-fence"] + [("ts-fence", FORGED)]
        producer.send(
            pipeline.topics.tokens,
            key=record.key,
            value=record.value,
            headers=headers,
            partition=record.partition,
        )
    producer.flush()


def test_a_replayed_record_with_a_forged_fencing_epoch_never_makes_a_region_refuse_a_revocation(
    one_region: Pipeline,
) -> None:
    pipeline = one_region
    bootstrap = pipeline.settings.kafka_bootstrap
    relay = lease_relay(pipeline, "holder")
    validator = pipeline.validator("eu")
    attacker = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        lead_region(pipeline, relay)
        token = pipeline.store.issue(USER, 1, "victim")
        assert 1 == relay.publish_batch()
        relay.heartbeat()
        wait_for(
            lambda: validator.validate(token.plain_text_token).outcome is Outcome.VALID,
            30,
            "the token valid in eu",
        )
        issued = [
            r
            for r in read_topic(bootstrap, pipeline.topics.tokens)
            if r.key == token.token_hash.encode()
        ]
        _replay_with_forged_fence(pipeline, issued, attacker)
        pipeline.store.revoke_token(token.id)
        assert 1 == relay.publish_batch()
        outcomes: list[Outcome] = []

        def revoked_in_eu() -> bool:
            relay.heartbeat()  # the attacker replays each new heartbeat: eu stays fresh
            beats: dict[int, Consumed] = {}
            for r in read_topic(bootstrap, pipeline.topics.tokens):
                if r.key is not None and r.key.startswith(b"heartbeat:"):
                    beats[r.partition] = r
            _replay_with_forged_fence(pipeline, list(beats.values()), attacker)
            outcomes.append(validator.validate(token.plain_text_token).outcome)
            return outcomes[-1] is Outcome.INVALID

        try:
            wait_for(revoked_in_eu, 20, "the revocation applied in eu")
        except AssertionError as e:
            raise AssertionError(f"{e}; eu answered {sorted(set(outcomes))}") from None
    finally:
        attacker.close()
        validator.close()
        relay.close()


@dataclass
class GatedPublisher(WrappedPublisher):
    """A real publisher that waits for ``before`` ahead of its next publish (the relay was
    paused there) and, after it, sets ``after`` and waits for ``then`` or two seconds,
    whichever comes first (the relay is slow between its produce and its marking)."""

    before: threading.Event | None = None
    after: threading.Event | None = None
    then: threading.Event | None = None

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        if self.before is not None:
            assert self.before.wait(30)
            self.before = None
        placed = self.inner.publish(records)
        if self.after is not None and self.then is not None:
            self.after.set()
            self.then.wait(2)
            self.after = self.then = None
        return placed


def test_a_late_record_landing_while_the_holder_marks_never_stays_the_newest_of_its_key(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    bootstrap = pipeline.settings.kafka_bootstrap
    b_produced, a_done = threading.Event(), threading.Event()
    old_pub = GatedPublisher(kafka_publisher(pipeline))
    new_pub = GatedPublisher(kafka_publisher(pipeline))
    old, new = old_and_new(pipeline, old_pub, new_pub)
    failures: list[BaseException] = []

    def old_relay() -> None:  # checks its lease, is paused until the new holder produced
        try:
            with pytest.raises(LeaseLostError):
                old.publish_batch()
        except BaseException as e:
            failures.append(e)
        finally:
            a_done.set()

    try:
        assert old.lease_step()  # and heartbeats
        old_pub.before = b_produced
        token = pipeline.store.issue(USER, 1, "late")
        paused = threading.Thread(target=old_relay)
        paused.start()
        wait_for(new.lease_step, 10, "the new relay takes the expired lease")
        new_pub.after, new_pub.then = b_produced, a_done
        revoked = pipeline.store.revoke_token(token.id)
        assert 2 == new.publish_batch()  # the old relay's record lands before it marks
        paused.join(30)
        assert not failures
        while new.publish_batch():
            pass
        records = read_topic(bootstrap, pipeline.topics.tokens)
        last = [r for r in records if r.key == token.token_hash.encode()][-1]
        assert revoked.seq == last.event().seq, "compaction keeps the older version"
    finally:
        old.close()
        new.close()
