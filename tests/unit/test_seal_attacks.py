"""Attacks on sealed mode by someone holding what a region holds (write access to the topic,
public keys, the HMAC key of ``both`` mode): values only, real Ed25519."""

from __future__ import annotations

from shared.events import Heartbeat, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys
from tests.unit.test_seal_gate import Clock, gate, published
from workers.handlers import RawRecord, prepare_sealed_batch

KEYS = RedisKeys()
HASH = "ab" * 32


def grant(seq: int) -> TokenEvent:
    return TokenEvent(seq, TokenOp.ISSUED, HASH, 7, "U", "1", "n", ("*",), 1, 1, None, 1)


def revocation(seq: int) -> TokenEvent:
    return TokenEvent(seq, TokenOp.REVOKED, HASH, 7, "U", "1", "n", ("*",), 1, 1, None, 1)


def at(offset: int, records: list[RawRecord]) -> list[RawRecord]:
    return [
        RawRecord(r.partition, offset + i, r.key, r.value, r.headers) for i, r in enumerate(records)
    ]


def test_a_replayed_old_sealed_grant_does_not_make_a_waiting_revocation_vanish() -> None:
    # The authority sealed a grant (seq 1) long ago; later it revokes the token (seq 2).
    old_grant = published([grant(1)])  # record + its genuine seal
    revoked = published([revocation(2)])
    # The revocation is in the partition, its seal not yet: an attacker appends the old
    # grant and its old seal in between (both genuine bytes, read from the topic).
    stream = [*at(10, revoked[:1]), *at(11, old_grant), *at(13, revoked[1:])]
    clock = Clock()
    g = gate(clock)
    values = []
    for record in stream:
        values += prepare_sealed_batch([record], g, KEYS).values
    assert encode(revocation(2)) in values, "the genuine revocation was dropped"
    assert g.superseded == 0


def test_a_revocation_whose_seal_is_read_after_the_wait_is_still_applied() -> None:
    # A topic writer stuffs records between a revocation and its seal (or the relay's seal
    # produce is retried through a broker fault): the worker reads the seal only after the
    # wait, when the revocation was dead-lettered as unsealed. The seal still releases it.
    revoked = published([revocation(2)])
    clock = Clock()
    g = gate(clock)
    first = prepare_sealed_batch(at(10, revoked[:1]), g, KEYS)
    assert first.values == []
    clock.now += 6
    expired = prepare_sealed_batch([], g, KEYS)
    assert [d.reason for d in expired.dead_letters] == ["unsealed"]
    late = prepare_sealed_batch(at(5000, revoked[1:]), g, KEYS)
    assert late.values == [encode(revocation(2))]


def test_a_record_with_a_null_header_value_is_dead_lettered_not_a_crash() -> None:
    # Kafka header values are nullable; other clients than kafka-python can write null ones
    junk = RawRecord(0, 3, b"junk", b"{}", [("x", None)])  # type: ignore[list-item]
    batch = prepare_sealed_batch([junk], gate(Clock()), KEYS)
    assert [d.reason for d in batch.dead_letters] == ["signature"]
    assert batch.next_offsets == {0: 4}


def test_a_heartbeat_behind_a_record_waiting_for_its_seal_does_not_make_the_region_fresh() -> None:
    # A heartbeat stamped T certifies that everything published before T was applied: a
    # revocation before it whose seal has not been read yet is not applied.
    revoked = published([revocation(2)])
    beat = published([Heartbeat(0, 9000, 2)])
    g = gate(Clock())
    batch = prepare_sealed_batch([*at(10, revoked[:1]), *at(11, beat)], g, KEYS)
    assert batch.values == [] and batch.beats == {}
    later = prepare_sealed_batch(at(13, revoked[1:]), g, KEYS)
    assert later.values == [encode(revocation(2))]


def test_a_sealed_heartbeat_behind_an_unsealed_heartbeat_still_makes_the_region_fresh() -> None:
    # a topic written in hmac mode holds unsealed heartbeats: they hold no change back
    old = Heartbeat(0, 8000, 1)
    value = encode(old)
    beat = published([Heartbeat(0, 9000, 2)])
    g = gate(Clock())
    batch = prepare_sealed_batch([RawRecord(0, 10, old.key, value, []), *at(11, beat)], g, KEYS)
    assert batch.beats == {0: 9000}


def test_a_resealed_copy_carries_no_fencing_epoch_of_the_relay_that_wrote_the_original() -> None:
    from producer.reseal import _copy

    copy = _copy((0, 5, b"k", b"{}", [("ts-fence", b"1"), ("x", b"y")]))
    assert ("ts-fence", b"1") not in copy.headers and ("x", b"y") in copy.headers
