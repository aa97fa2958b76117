"""Usage without a write per request: validators -> region Redis -> worker -> Kafka -> store."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from producer.kafka_io import UsageConsumer
from producer.usage import UsageApplier
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


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
    )
    thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
    thread.start()
    validator = pipeline.validator("eu")
    recorder = validator.enable_usage(interval_s=0.2)
    try:
        with pipeline.store.engine.connect() as conn:
            outbox_before = conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar()
        for _ in range(50):
            assert Outcome.VALID == validator.validate(used.plain_text_token).outcome
        wait_for(
            lambda: pipeline.store.get(used.id).last_used_at is not None, 30, "last_used_at written"
        )
        assert pipeline.store.get(unused.id).last_used_at is None
        with pipeline.store.engine.connect() as conn:
            outbox_after = conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar()
        assert outbox_before == outbox_after, "usage updates publish nothing"
        assert recorder.interval_s == 0.2
    finally:
        validator.close()
        stop.set()
        thread.join(10)
