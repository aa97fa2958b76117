"""Attacks on relay failover and fencing (issue 17): an operator who deletes the lease row
or restores an older backup of it, and a forged ``ts-fence`` header (it is not covered by
the HMAC). Real store, Kafka and Redis; deterministic (no pausing of processes)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer.relay import Relay
from producer.relay_lease import RelayLease
from shared.outcomes import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import kafka_connector, wait_for

USER = "App\\Models\\User"


class NoWaker:
    def wait(self, timeout_s: float) -> bool:
        return False

    def close(self) -> None:
        return None


def _relay(pipeline: Pipeline, holder: str) -> Relay:
    engine = pipeline.store.engine
    connect = kafka_connector(pipeline.settings.kafka_bootstrap, pipeline.topics)
    return Relay(
        engine, connect, pipeline.built.keyring, NoWaker(), lease=RelayLease(engine, holder)
    )


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
    first = _relay(pipeline, "first")
    second = _relay(pipeline, "second")
    validator = pipeline.validator("eu")
    try:
        assert first.lease_step()  # epoch 5: the region sees it
        pipeline.start_worker("eu")

        def beat_and_ready() -> bool:
            first.heartbeat()
            return pipeline.state("eu").ready

        wait_for(beat_and_ready, 90, "eu ready")
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
