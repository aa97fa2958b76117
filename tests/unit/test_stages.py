"""Stage timing (``shared.stages``): off, the relay's records are exactly as before and a
worker records nothing; on, each outbox record carries its seq and the relay's stamps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.publisher import MemoryPublisher
from producer.relay import Relay, RelayOptions
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared import stages, tracing
from shared.events import Keyring
from workers.handlers import RawRecord

USER = "App\\Models\\User"
KEYRING = Keyring({"unit-1": b"u" * 32}, "unit-1")


class NoWaker:
    def wait(self, timeout_s: float) -> bool:
        return False

    def close(self) -> None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield TokenStore(engine)
    engine.dispose()


@pytest.fixture
def timing() -> Iterator[None]:
    stages.enable(True)
    yield
    stages.enable(False)


def publish(store: TokenStore) -> MemoryPublisher:
    topic = MemoryPublisher(partition_count=3)
    Relay(store.engine, lambda: topic, KEYRING, NoWaker(), options=RelayOptions()).publish_batch()
    return topic


def test_with_stage_timing_off_the_relay_sends_only_the_signature_headers(
    store: TokenStore,
) -> None:
    store.issue(USER, 1, "a")
    [record] = publish(store).records()
    assert ["ts-kid", "ts-sig"] == [name for name, _ in record.headers]
    assert tracing.batch_fetched([record]) is None


def test_with_stage_timing_on_each_record_carries_its_seq_and_the_relays_stamps_in_order(
    store: TokenStore, timing: None
) -> None:
    before = stages.now_us()
    issued = store.issue(USER, 1, "a")
    revoked = store.revoke_token(issued.id)
    records = publish(store).records()
    after = stages.now_us()
    batch = tracing.batch_verified(tracing.batch_fetched(records))
    assert batch is not None
    seqs = [seq for seq, _, _ in batch.records]
    assert sorted([issued.seq, revoked.seq]) == sorted(seqs)
    for _, woke, produced in batch.records:
        assert before <= woke <= produced <= after
        assert stages.acked_at_us(revoked.seq) is not None
    acked = stages.acked_at_us(revoked.seq)
    assert acked is not None and max(p for _, _, p in batch.records) <= acked <= after
    # still verifiable: the stage header is outside the signature
    for record in records:
        KEYRING.verify(record.key, record.value, record.headers)


def test_a_worker_turns_a_fetch_into_debug_hash_fields_and_back(timing: None) -> None:
    raw = RawRecord(0, 7, b"k", b"v", [("ts-kid", b"x"), (stages.STAGE_HEADER, b"42,10,20")])
    garbled = RawRecord(0, 8, b"k", b"v", [(stages.STAGE_HEADER, b"not,numbers")])
    batch = tracing.batch_verified(tracing.batch_fetched([raw, garbled]))
    assert batch is not None
    assert batch.fetched_us <= batch.verified_us
    fields = batch.applied(99)
    assert ["42"] == list(fields)
    parsed = stages.parse_stages(42, fields["42"])
    assert stages.RecordStages(42, 10, 20, batch.fetched_us, 99) == parsed
    assert stages.parse_stages(1, b"1,2") is None
    assert stages.parse_stages(1, None) is None
    assert time.time_ns() // 1000 >= batch.fetched_us


def test_tracing_stays_off_unless_otel_variables_name_an_exporter_or_an_endpoint() -> None:
    assert tracing.configure("svc", "ts", {}) is False
    assert tracing.configure("svc", "ts", {"OTEL_TRACES_EXPORTER": "none"}) is False
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1"}
    assert tracing.configure("svc", "ts", disabled) is False
    assert tracing.configure("svc", "ts", {"OTEL_TRACES_EXPORTER": "zipkin-ish"}) is False
    assert not tracing.active()


class BrokenTracer:
    """A tracer whose every span fails (a broken exporter set-up, an SDK bug)."""

    def start_span(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("no spans today")


def test_a_failing_tracer_never_stops_the_relay_the_store_or_a_validator(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import otel

    monkeypatch.setattr(otel.STATE, "tracer", BrokenTracer())
    issued = store.issue(USER, 1, "a")  # the store's span fails: the mutation does not
    topic = publish(store)  # the relay's spans fail: the batch is still published, marked
    [record] = topic.records()
    assert ["ts-kid", "ts-sig", stages.STAGE_HEADER] == [name for name, _ in record.headers]
    assert 0 == Relay(store.engine, lambda: topic, KEYRING, NoWaker()).publish_batch()
    tracing.receipt(issued.seq, [("eu", "enforced", 1.0)])
    tracing.validation_began()
    tracing.validated("valid", "region")
