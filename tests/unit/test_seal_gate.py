"""Sealed batches, values only: the relay's seals and the worker's gate (real Ed25519)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from producer.publisher import MemoryPublisher, OutgoingRecord, SealingPublisher
from shared.events import Heartbeat, Keyring, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys
from shared.seal import SealSigner, SealVerifier, is_seal_key, key_id_of
from workers.handlers import RawRecord, SealGate, prepare_batch, prepare_sealed_batch

TOPIC = "t.tokens"
KEYS = RedisKeys()
HMAC = Keyring({"h1": b"0123456789abcdef0123456789abcdef"}, "h1")


def new_signer() -> tuple[SealSigner, str, bytes]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    kid = key_id_of(public)
    return SealSigner(kid, private), kid, public


SIGNER, KID, PUBLIC = new_signer()


def token(seq: int) -> TokenEvent:
    h = f"{seq:064x}"
    return TokenEvent(seq, TokenOp.ISSUED, h, seq, "U", "1", "n", ("*",), 1, 1, None, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def published(
    events: Sequence[TokenEvent | Heartbeat], partition: int = 0, hmac: bool = False
) -> list[RawRecord]:
    """What a sealing relay puts into ``partition`` for one publish: records, then seals."""
    memory = MemoryPublisher(partition_count=3)
    sealing = SealingPublisher(memory, TOPIC, SIGNER)
    out = []
    for e in events:
        value = encode(e)
        out.append(OutgoingRecord(e.key, value, HMAC.sign(e.key, value) if hmac else [], partition))
    sealing.publish(out)
    return [RawRecord(p, o, r.key, r.value, r.headers) for p, o, r in memory.log]


def gate(clock: Clock | None = None, hmac: Keyring | None = None) -> SealGate:
    verifier = SealVerifier({KID: PUBLIC})
    return SealGate(verifier, TOPIC, wait_s=5.0, hmac=hmac, clock=clock or Clock())


def test_the_relay_appends_one_seal_after_each_partitions_records_of_a_publish() -> None:
    records = published([token(1), token(2), token(3)], partition=2)
    assert [is_seal_key(r.key) for r in records] == [False, False, False, True]
    assert {r.partition for r in records} == {2}


def test_a_record_is_applied_only_once_the_seal_covering_it_was_read() -> None:
    records = published([token(1), token(2)])
    g = gate()
    first = prepare_sealed_batch(records[:2], g, KEYS)
    assert first.values == [] and first.dead_letters == []
    assert first.next_offsets == {0: 0}  # a restart reads the waiting records again
    second = prepare_sealed_batch(records[2:], g, KEYS)
    assert second.values == [records[0].value, records[1].value]
    assert second.next_offsets == {0: 3}


def test_records_appended_after_a_seal_are_dead_lettered_once_the_wait_is_over() -> None:
    clock = Clock()
    records = published([token(1)])
    extra = published([token(2)])[0]
    late = RawRecord(0, 2, extra.key, extra.value, extra.headers)
    g = gate(clock)
    batch = prepare_sealed_batch([*records, late], g, KEYS)
    assert batch.values == [records[0].value]
    assert batch.next_offsets == {0: 2}
    clock.now += 5.0
    batch = prepare_sealed_batch([], g, KEYS)
    assert [(d.reason, d.record.offset, d.seq) for d in batch.dead_letters] == [("unsealed", 2, 2)]
    assert batch.values == [] and batch.next_offsets == {0: 3}
    assert g.unsealed == 1


def test_a_valid_seal_replayed_into_another_partition_vouches_for_nothing() -> None:
    records = published([token(1)], partition=0)
    moved = [RawRecord(1, i, r.key, r.value, r.headers) for i, r in enumerate(records)]
    batch = prepare_sealed_batch(moved, gate(), KEYS)
    assert batch.values == []
    assert [(d.reason, d.detail) for d in batch.dead_letters] == [
        ("signature", "seal is for partition 0")
    ]


def test_a_valid_seal_replayed_into_another_topic_vouches_for_nothing() -> None:
    records = published([token(1)])
    other = SealGate(SealVerifier({KID: PUBLIC}), "other.tokens", wait_s=5.0, clock=Clock())
    batch = prepare_sealed_batch(records, other, KEYS)
    assert batch.values == []
    assert [d.reason for d in batch.dead_letters] == ["signature"]


def test_a_seal_whose_digest_list_was_altered_is_refused() -> None:
    records = published([token(1), token(2)])
    seal = records[-1]
    body = orjson.loads(seal.value or b"")
    digests = base64.b64decode(body["digests"])
    body["digests"] = base64.b64encode(digests[:32] + bytes(32)).decode()
    altered = RawRecord(
        0, 2, seal.key, orjson.dumps(body, option=orjson.OPT_SORT_KEYS), seal.headers
    )
    batch = prepare_sealed_batch([*records[:2], altered], gate(), KEYS)
    assert batch.values == []
    assert [(d.reason, d.detail) for d in batch.dead_letters] == [
        ("signature", "seal signature does not match")
    ]


def test_a_seal_signed_by_a_key_the_region_does_not_accept_is_refused() -> None:
    retired, _, _ = new_signer()
    memory = MemoryPublisher(partition_count=1)
    value = encode(token(1))
    SealingPublisher(memory, TOPIC, retired).publish([OutgoingRecord(token(1).key, value, [], 0)])
    records = [RawRecord(p, o, r.key, r.value, r.headers) for p, o, r in memory.log]
    batch = prepare_sealed_batch(records, gate(), KEYS)
    assert batch.values == []
    assert batch.dead_letters[0].reason == "signature"
    assert "unknown or retired seal key id" in batch.dead_letters[0].detail


def test_a_record_changed_after_sealing_is_not_covered() -> None:
    clock = Clock()
    records = published([token(1)])
    changed = token(1)
    tampered = RawRecord(0, 0, changed.key, encode(changed).replace(b'"n"', b'"x"'), ())
    g = gate(clock)
    batch = prepare_sealed_batch([tampered, records[1]], g, KEYS)
    assert batch.values == [] and batch.next_offsets == {0: 0}
    clock.now += 6
    assert [d.reason for d in prepare_sealed_batch([], g, KEYS).dead_letters] == ["unsealed"]


def test_a_batch_published_twice_is_covered_by_the_second_seal() -> None:
    first = published([token(1), token(2)])[:2]  # the first seal never landed
    again = [
        RawRecord(0, 2 + r.offset, r.key, r.value, r.headers)
        for r in published([token(1), token(2)])
    ]
    batch = prepare_sealed_batch([*first, *again], gate(), KEYS)
    assert len(batch.values) == 4 and batch.dead_letters == []
    assert batch.next_offsets == {0: 5}


def test_both_mode_applies_hmac_records_at_once_and_sealed_ones_after_their_seal() -> None:
    records = published([token(1)], hmac=True)
    batch = prepare_sealed_batch(records[:1], gate(hmac=HMAC), KEYS)
    assert batch.values == [records[0].value] and batch.next_offsets == {0: 1}
    sealed_only = published([token(2)])
    g = gate(hmac=HMAC)
    assert prepare_sealed_batch(sealed_only[:1], g, KEYS).values == []
    assert prepare_sealed_batch(sealed_only[1:], g, KEYS).values == [sealed_only[0].value]


def test_sealed_mode_ignores_a_valid_hmac() -> None:
    clock = Clock()
    forged = published([token(9)], hmac=True)[:1]  # what a region holds: the HMAC key
    g = gate(clock)
    assert prepare_sealed_batch(forged, g, KEYS).values == []
    clock.now += 5
    assert [d.reason for d in prepare_sealed_batch([], g, KEYS).dead_letters] == ["unsealed"]


def test_heartbeats_are_sealed_too() -> None:
    records = published([Heartbeat(0, 5000, 1)])
    batch = prepare_sealed_batch(records, gate(), KEYS)
    assert batch.beats == {0: 5000} and batch.heartbeats == 1


def test_an_hmac_worker_skips_seals_without_dead_lettering_them() -> None:
    records = published([token(1)], hmac=True)
    batch = prepare_batch(records, HMAC, KEYS)
    assert batch.values == [records[0].value] and batch.dead_letters == []
    assert batch.next_offsets == {0: 2}


def test_a_large_publish_gets_one_seal_per_thousand_records() -> None:
    records = published([token(i) for i in range(1, 2100)])
    seals = [r for r in records if is_seal_key(r.key)]
    assert len(seals) == 3
    batch = prepare_sealed_batch(records, gate(), KEYS)
    assert len(batch.values) == 2099 and batch.dead_letters == []


@pytest.mark.parametrize("mode", ["", "hmac", "both", "sealed"])
def test_the_signing_mode_setting_takes_hmac_both_and_sealed(mode: str) -> None:
    from shared.settings import Settings

    settings = Settings.from_env({"TOKENSYNC_SIGNING_MODE": mode} if mode else {})
    assert settings.signing_mode == (mode or "hmac")
    assert Settings.from_env(settings.to_env()).signing_mode == settings.signing_mode


def test_an_unknown_signing_mode_is_a_clear_error() -> None:
    from shared.errors import ConfigError
    from shared.settings import Settings

    with pytest.raises(ConfigError, match="SIGNING_MODE must be hmac, both or sealed"):
        Settings.from_env({"TOKENSYNC_SIGNING_MODE": "ed25519"})


def test_an_unsealed_heartbeat_is_dropped_without_a_dead_letter() -> None:
    clock = Clock()
    beat = Heartbeat(0, 9000, 1)
    value = encode(beat)
    g = gate(clock)
    batch = prepare_sealed_batch(
        [RawRecord(0, 0, beat.key, value, HMAC.sign(beat.key, value))], g, KEYS
    )
    assert batch.beats == {} and batch.next_offsets == {0: 0}
    clock.now += 5
    batch = prepare_sealed_batch([], g, KEYS)
    assert batch.dead_letters == [] and batch.beats == {} and batch.next_offsets == {0: 1}
    assert g.unsealed_heartbeats == 1


def test_an_unsealed_record_a_newer_sealed_copy_replaces_is_dropped_not_dead_lettered() -> None:
    clock = Clock()
    old = token(1)
    old_value = encode(old).replace(b'"n"', b'"old"')
    original = RawRecord(0, 0, old.key, old_value, HMAC.sign(old.key, old_value))
    copy = [RawRecord(0, 1 + r.offset, r.key, r.value, r.headers) for r in published([token(1)])]
    g = gate(clock)
    batch = prepare_sealed_batch([original, *copy], g, KEYS)
    assert batch.values == [copy[0].value] and batch.next_offsets == {0: 3}
    clock.now += 6
    assert prepare_sealed_batch([], g, KEYS).dead_letters == []
    assert g.superseded == 1 and g.unsealed == 0


def test_a_seal_by_a_key_known_as_retired_is_ignored_and_what_it_covered_is_unsealed() -> None:
    retired, kid, _ = new_signer()
    memory = MemoryPublisher(partition_count=1)
    value = encode(token(1))
    SealingPublisher(memory, TOPIC, retired).publish([OutgoingRecord(token(1).key, value, [], 0)])
    records = [RawRecord(p, o, r.key, r.value, r.headers) for p, o, r in memory.log]
    clock = Clock()
    g = SealGate(SealVerifier({KID: PUBLIC}, [kid]), TOPIC, wait_s=5.0, clock=clock)
    batch = prepare_sealed_batch(records, g, KEYS)
    assert batch.values == [] and batch.dead_letters == [] and g.retired_seals == 1
    clock.now += 5
    assert [d.reason for d in prepare_sealed_batch([], g, KEYS).dead_letters] == ["unsealed"]


def test_what_the_seal_gate_sees_is_counted_for_prometheus_by_region() -> None:
    """Seals verified, retired seals, unsealed records: an operator pages on these."""
    from prometheus_client import REGISTRY

    def seen(event: str) -> float:
        value = REGISTRY.get_sample_value(
            "tokensync_worker_seal_gate_total", {"region": "xx", "event": event}
        )
        return value or 0.0

    retired, kid, _ = new_signer()
    memory = MemoryPublisher(partition_count=1)
    SealingPublisher(memory, TOPIC, retired).publish(
        [OutgoingRecord(token(1).key, encode(token(1)), [], 0)]
    )
    records = [RawRecord(p, o, r.key, r.value, r.headers) for p, o, r in memory.log]
    clock = Clock()
    g = SealGate(SealVerifier({KID: PUBLIC}, [kid]), TOPIC, wait_s=5.0, clock=clock, region="xx")
    before = {e: seen(e) for e in ("retired_seals", "unsealed")}
    prepare_sealed_batch(records, g, KEYS)
    clock.now += 5
    prepare_sealed_batch([], g, KEYS)
    assert seen("retired_seals") - before["retired_seals"] == 1 == g.retired_seals
    assert seen("unsealed") - before["unsealed"] == 1 == g.unsealed
