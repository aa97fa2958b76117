"""Attacks on sealed mode on real Kafka and Redis by a writer of the topic holding what a
region holds: genuine records and seals replayed in between, a worker restarted while
records wait for their seal.

The test plays the authority where it needs a genuine record the store would not write
(a revocation at a chosen moment): it seals with the relay's own key, as the relay does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from shared.seal import record_digest
from shared.seal_keys import SealKeyDir
from tests.harness import Pipeline, sealed_pipeline
from tests.integration.test_sealed_stream import genuine_batch, send
from tests.kafka_helpers import Consumed, wait_for

pytestmark = pytest.mark.integration
REGIONS = ("eu", "us")
Raw = tuple[int, bytes, bytes, list[tuple[str, bytes]]]


@pytest.fixture(scope="module")
def sealed(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    redis_server: tuple[str, int],
) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("attacks")
    yield from sealed_pipeline(tmp, kafka_bootstrap, redis_server, first_db=12, seal_wait_s=60.0)


def revocation_of(pipeline: Pipeline, grant: Consumed) -> tuple[str, Raw, Raw]:
    """A revocation of ``grant``'s token with a higher seq, and its seal, as the authority
    would publish them into the grant's partition: (token hash, record, seal)."""
    data = orjson.loads(grant.value or b"")
    data["op"], data["seq"] = "revoked", data["seq"] + 1_000_000
    value = orjson.dumps(data)
    key = grant.key or b""
    headers = [(n, v) for n, v in grant.headers if n not in ("ts-kid", "ts-sig")]
    signer = SealKeyDir(pipeline.settings.seal_dir).signer()
    covered = [(key, record_digest(key, value, headers))]
    [(seal_key, seal_value, seal_headers)] = signer.seals(
        pipeline.topics.tokens, grant.partition, covered
    )
    p = grant.partition
    return data["hash"], (p, key, value, headers), (p, seal_key, seal_value, seal_headers)


def as_raw(record: Consumed) -> Raw:
    return (record.partition, record.key or b"", record.value or b"", list(record.headers))


def caught_up(pipeline: Pipeline) -> None:
    ends = pipeline.built.end_offsets()
    wait_for(
        lambda: all(pipeline.built.caught_up(r, ends) for r in REGIONS),
        60,
        "every region caught up with the topic",
    )


def status(pipeline: Pipeline, token_hash: str) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for name in REGIONS:
        client = pipeline.redis(name)
        try:
            found[name] = client.hget(pipeline.keys.token(token_hash), "s")  # type: ignore[assignment]
        finally:
            client.close()
    return found


def test_a_genuine_old_grant_and_seal_replayed_between_a_revocation_and_its_seal_do_not_cancel_it(
    sealed: Pipeline,
) -> None:
    records, seal = genuine_batch(sealed, "replayed grant")
    [grant] = [r for r in records if not (r.key or b"").startswith(b"heartbeat:")][:1]
    token_hash, revoked, revoked_seal = revocation_of(sealed, grant)
    assert status(sealed, token_hash) == dict.fromkeys(REGIONS, b"l")
    send(sealed, [revoked, *map(as_raw, records), as_raw(seal), revoked_seal])
    caught_up(sealed)
    assert status(sealed, token_hash) == dict.fromkeys(REGIONS, b"r")


def test_a_worker_restarted_while_a_record_waits_for_its_seal_applies_it_once_sealed(
    sealed: Pipeline,
) -> None:
    records, _ = genuine_batch(sealed, "restart")
    grant = next(r for r in records if not (r.key or b"").startswith(b"heartbeat:"))
    token_hash, revoked, revoked_seal = revocation_of(sealed, grant)
    send(sealed, [revoked])
    time.sleep(2)  # the workers read it and hold it
    sealed.stop_worker("eu")
    sealed.start_worker("eu")
    sealed.wait_ready("eu")
    time.sleep(2)
    assert status(sealed, token_hash) == dict.fromkeys(REGIONS, b"l")  # nothing unsealed
    send(sealed, [revoked_seal])
    caught_up(sealed)
    assert status(sealed, token_hash) == dict.fromkeys(REGIONS, b"r")  # nothing lost


def test_a_record_with_a_header_name_too_long_to_digest_is_dead_lettered_and_the_stream_goes_on(
    sealed: Pipeline,
) -> None:
    junk_key = f"junk-{uuid.uuid4().hex}".encode()
    send(sealed, [(0, junk_key, b"{}", [("x" * 70_000, b"")])])
    marker = sealed.store.issue("App\\Models\\User", 3, "after the long header")
    sealed.wait_applied(marker.seq, timeout_s=30)
