"""Fencing end to end, deterministic: a relay loses the lease while its produce is in
flight (it was paused there), the new holder publishes the same rows first, and the old
relay's records land after them. The region dead-letters those as ``fenced``, keeps the
newer version, and the old relay marks nothing. Also when the old relay produced without
asking the store because its last renewal was younger than a third of the TTL (the lease
taken from it against the rules, by an edit of the lease row)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from producer.publisher import OutgoingRecord, Placement
from producer.relay import Relay
from producer.relay_lease import LeaseLostError, RelayLease
from shared.events import fence_of
from tests.fencing_helpers import (
    NoWaker,
    WrappedPublisher,
    kafka_publisher,
    lead_region,
    old_and_new,
)
from tests.harness import Pipeline
from tests.kafka_helpers import kafka_connector, read_topic, wait_for

USER = "App\\Models\\User"


@dataclass
class PausedPublisher(WrappedPublisher):
    """A real publisher that runs ``hooks`` before its next publish (the relay paused
    there, after its lease check)."""

    hooks: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        while self.hooks:
            self.hooks.pop(0)()
        return self.inner.publish(records)


def test_records_a_relay_sent_after_losing_the_lease_are_fenced_in_the_region(
    one_region: Pipeline,
) -> None:
    pipeline = one_region
    paused = PausedPublisher(kafka_publisher(pipeline))
    old, new = old_and_new(pipeline, paused)
    try:
        lead_region(pipeline, old)
        token = pipeline.store.issue(USER, 1, "fenced")
        revoked = pipeline.store.revoke_token(token.id)

        def take_over() -> None:
            wait_for(new.lease_step, 10, "the new relay takes the expired lease")
            assert 2 == new.publish_batch()  # issue and revoke, under the new epoch

        paused.hooks.append(take_over)
        with pytest.raises(LeaseLostError):
            old.publish_batch()  # its two records land after the new relay's
        # the old relay marked nothing; it had the newest row of the token (the
        # revocation) marked unpublished again, so that it is the key's last record
        assert 1 == old.backlog()
        assert 1 == new.publish_batch()
        letters = read_topic(
            pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters, expect=2
        )
        reasons = [dict(letter.headers).get("ts-dlq-reason") for letter in letters]
        assert [b"fenced", b"fenced"] == reasons
        records = read_topic(pipeline.settings.kafka_bootstrap, pipeline.topics.tokens)
        old_epoch = min(f for r in records if (f := fence_of(r.headers)) is not None)
        assert {old_epoch} == {fence_of(letter.headers) for letter in letters}
        last = [r for r in records if r.key == token.token_hash.encode()][-1]
        assert revoked.seq == last.event().seq
        assert (fence_of(last.headers) or 0) > old_epoch
        client = pipeline.redis("eu")
        state = client.hmget(pipeline.keys.token(token.token_hash), "v", "s")
        client.close()
        assert [str(revoked.seq).encode(), b"r"] == state
        assert not old.lease_step()
    finally:
        old.close()
        new.close()


def test_records_sent_on_a_cached_lease_confirmation_after_a_forced_take_over_are_fenced(
    one_region: Pipeline,
) -> None:
    pipeline = one_region
    engine = pipeline.store.engine
    connect = kafka_connector(pipeline.settings.kafka_bootstrap, pipeline.topics)
    lease = RelayLease(engine, "old", ttl_ms=60_000)  # a renewal is trusted for 20 s
    old = Relay(engine, connect, pipeline.built.keyring, NoWaker(), lease=lease)
    new = Relay(engine, connect, pipeline.built.keyring, NoWaker(), lease=RelayLease(engine, "new"))
    try:
        assert old.lease_step()
        pipeline.start_worker("eu")

        def beat_and_ready() -> bool:
            old.heartbeat()
            return pipeline.state("eu").ready

        wait_for(beat_and_ready, 90, "eu ready")
        old_epoch = lease.epoch  # confirmed by its take-over just now
        with engine.begin() as conn:  # an operator frees the live lease by hand
            conn.execute(sa.text("UPDATE tokensync_relay_lease SET expires_at_ms = 0"))
        assert new.lease_step()  # a new epoch, beaten into every partition at once
        token = pipeline.store.issue(USER, 1, "late")
        with pytest.raises(LeaseLostError):
            old.publish_batch()  # produced on its cached confirmation; refused at the mark
        [letter] = read_topic(
            pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters, expect=1
        )
        assert b"fenced" == dict(letter.headers).get("ts-dlq-reason")
        assert old_epoch == fence_of(letter.headers)
        assert 1 == new.publish_batch()  # the row the old relay could not mark

        def applied_in_eu() -> bool:
            client = pipeline.redis("eu")
            try:
                return str(token.seq).encode() == client.hget(
                    pipeline.keys.token(token.token_hash), "v"
                )
            finally:
                client.close()

        wait_for(applied_in_eu, 30, "the new holder's record applied in eu")
        assert not old.lease_step()
    finally:
        old.close()
        new.close()
