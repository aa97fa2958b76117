"""Sealed mode on real Kafka and Redis: what the relay seals is applied, and nothing a
region (or any other writer of the topic) makes is, however it replays or alters seals.

One pipeline (relay thread, workers eu and us in ``sealed`` mode) serves every test of
the module; each test forges records about tokens of its own and waits for its outcome.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from kafka import KafkaProducer

from producer.tokens import hash_token
from shared.events import TokenEvent, TokenOp, encode
from shared.seal import SealSigner, is_seal_key, load_private_key, record_digest
from shared.seal_keys import SealKeyDir
from shared.validator import Outcome
from tests.harness import Pipeline, sealed_pipeline
from tests.kafka_helpers import KEYRING, Consumed, read_topic, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
REGIONS = ("eu", "us")


@pytest.fixture(scope="module")
def sealed(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    redis_server: tuple[str, int],
) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("sealed")

    def retire_a_stolen_key(keys: SealKeyDir) -> None:
        retired = keys.generate()  # a key regions accepted once, retired since
        # someone kept a copy of its private key before it was retired (and deleted)
        (tmp / "stolen.pem").write_bytes(keys.private_path(retired.kid).read_bytes())
        keys.retire(retired.kid)

    yield from sealed_pipeline(
        tmp,
        kafka_bootstrap,
        redis_server,
        first_db=10,
        seal_wait_s=1.0,
        prepare_keys=retire_a_stolen_key,
    )


def forged_event(name: str) -> TokenEvent:
    h = hash_token(f"{name}-{uuid.uuid4().hex}")
    return TokenEvent(10**9, TokenOp.ISSUED, h, 10**9, USER, "1", name, ("*",), 1, 1, None, 1)


def send(
    pipeline: Pipeline, records: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Write raw records (partition, key, value, headers) as a topic writer would."""
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    for partition, key, value, headers in records:
        producer.send(
            pipeline.topics.tokens, key=key, value=value, headers=headers, partition=partition
        )
    producer.flush()
    producer.close()


def letters_about(pipeline: Pipeline, key: bytes, count: int) -> dict[str, list[bytes]]:
    """Dead-letter reasons per region for records of ``key``, once ``count`` exist."""
    found: dict[str, list[bytes]] = {}

    def arrived() -> bool:
        found.clear()
        for r in read_topic(
            pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters, timeout_s=2
        ):
            if r.key == key:
                headers = dict(r.headers)
                found.setdefault(headers["ts-dlq-region"].decode(), []).append(
                    headers["ts-dlq-reason"]
                )
        return sum(len(v) for v in found.values()) >= count

    wait_for(arrived, 30, f"{count} dead letters about {key[:12]!r}")
    return {region: sorted(reasons) for region, reasons in found.items()}


def assert_not_applied(pipeline: Pipeline, event: TokenEvent) -> None:
    for name in REGIONS:
        client = pipeline.redis(name)
        try:
            assert not client.exists(pipeline.keys.token(event.token_hash)), name
        finally:
            client.close()


def genuine_batch(pipeline: Pipeline, name: str) -> tuple[list[Consumed], Consumed]:
    """A token the store issued, its record and the seal after it, read from the topic."""
    issued = pipeline.store.issue(USER, 7, name)
    pipeline.wait_applied(issued.seq)
    place = pipeline.store.position(issued.seq)
    records = [
        r
        for r in read_topic(pipeline.settings.kafka_bootstrap, pipeline.topics.tokens)
        if r.partition == place.partition and r.offset >= (place.offset or 0)
    ]
    seal = next(r for r in records if is_seal_key(r.key))
    return [r for r in records if r.offset < seal.offset], seal


def test_a_sealed_stream_is_applied_in_every_region_and_carries_no_mac(sealed: Pipeline) -> None:
    kept = sealed.store.issue(USER, 1, "kept")
    gone = sealed.store.issue(USER, 1, "gone")
    last = sealed.store.revoke_token(gone.id)
    sealed.wait_applied(last.seq)
    for name in REGIONS:
        validator = sealed.validator(name)
        assert Outcome.VALID == validator.validate(kept.plain_text_token).outcome
        assert Outcome.INVALID == validator.validate(gone.plain_text_token).outcome
        validator.close()
    records = read_topic(sealed.settings.kafka_bootstrap, sealed.topics.tokens)
    assert records and not any("ts-sig" in dict(r.headers) for r in records)
    assert any(is_seal_key(r.key) for r in records)


def test_a_record_made_with_everything_a_region_holds_is_dead_lettered_by_the_other_regions(
    sealed: Pipeline,
) -> None:
    # a region holds its settings: the HMAC keys (of usage reports, and of the stream in
    # hmac mode) and the seal public keys; neither makes a seal
    event = forged_event("hmac-forged")
    value = encode(event)
    send(sealed, [(0, event.key, value, KEYRING.sign(event.key, value))])
    reasons = letters_about(sealed, event.key, len(REGIONS))
    assert {name: [b"unsealed"] for name in REGIONS} == reasons
    assert_not_applied(sealed, event)


def test_a_valid_seal_replayed_into_another_partition_releases_nothing(sealed: Pipeline) -> None:
    records, seal = genuine_batch(sealed, "replayed")
    other = (seal.partition + 1) % sealed.settings.partitions
    copied = [(other, r.key or b"", r.value or b"", r.headers) for r in [*records, seal]]
    send(sealed, copied)
    reasons = letters_about(sealed, seal.key or b"", len(REGIONS))
    assert {name: [b"signature"] for name in REGIONS} == reasons
    letters = letters_about(sealed, records[0].key or b"", len(REGIONS))
    assert {name: [b"unsealed"] for name in REGIONS} == letters


def test_a_seal_whose_digest_list_was_altered_is_refused_and_its_records_never_applied(
    sealed: Pipeline,
) -> None:
    event = forged_event("altered")
    value = encode(event)
    _, seal = genuine_batch(sealed, "altered-template")
    body = orjson.loads(seal.value or b"")
    body["digests"] = base64.b64encode(record_digest(event.key, value, [])).decode()
    body["count"] = 1
    altered = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    send(
        sealed,
        [
            (seal.partition, event.key, value, []),
            (seal.partition, seal.key or b"", altered, seal.headers),
        ],
    )
    assert {name: [b"signature"] for name in REGIONS} == letters_about(
        sealed, seal.key or b"", len(REGIONS)
    )
    assert {name: [b"unsealed"] for name in REGIONS} == letters_about(
        sealed, event.key, len(REGIONS)
    )
    assert_not_applied(sealed, event)


def test_records_appended_after_a_seal_are_dead_lettered_and_never_applied(
    sealed: Pipeline,
) -> None:
    records, seal = genuine_batch(sealed, "appended")
    event = forged_event("appended")
    send(sealed, [(seal.partition, event.key, encode(event), [])])
    assert {name: [b"unsealed"] for name in REGIONS} == letters_about(
        sealed, event.key, len(REGIONS)
    )
    assert_not_applied(sealed, event)
    assert records


def test_a_seal_signed_by_a_retired_key_is_refused(sealed: Pipeline) -> None:
    keys = SealKeyDir(sealed.settings.seal_dir)
    retired = next(k for k in keys.entries() if k.status.value == "retired")
    assert not keys.private_path(retired.kid).exists()
    stolen = (sealed.settings.seal_dir.parent / "stolen.pem").read_bytes()
    signer = SealSigner(retired.kid, load_private_key(stolen))
    event = forged_event("retired")
    value = encode(event)
    covered = [(event.key, record_digest(event.key, value, []))]
    [(key, seal_value, headers)] = signer.seals(sealed.topics.tokens, 0, covered)
    send(sealed, [(0, event.key, value, []), (0, key, seal_value, headers)])
    # the seal vouches for nothing (regions know the key as retired: a compacted topic
    # still holds its honest seals), so what it covered is dead-lettered
    assert {name: [b"unsealed"] for name in REGIONS} == letters_about(
        sealed, event.key, len(REGIONS)
    )
    assert_not_applied(sealed, event)


def test_a_batch_whose_seal_never_arrives_is_dead_lettered_after_the_wait_and_never_applied(
    sealed: Pipeline,
) -> None:
    records, _ = genuine_batch(sealed, "truncated")
    genuine = [r for r in records if not is_seal_key(r.key)]
    event = forged_event("truncated")
    started = time.monotonic()
    send(sealed, [(genuine[0].partition, event.key, encode(event), [])])
    assert {name: [b"unsealed"] for name in REGIONS} == letters_about(
        sealed, event.key, len(REGIONS)
    )
    assert time.monotonic() - started >= sealed.settings.seal_wait_s * 0.9
    assert_not_applied(sealed, event)
    marker = sealed.store.issue(USER, 1, "after the truncated batch")
    sealed.wait_applied(marker.seq)  # the stream goes on
