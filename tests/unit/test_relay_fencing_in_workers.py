"""The workers' side of relay fencing (``workers.fencing``, ``workers.handlers``): a record
of an older relay's fencing epoch after a newer one is dead-lettered as ``fenced``."""

from __future__ import annotations

import hmac

import orjson

from shared.events import FENCE_HEADER, Heartbeat, Keyring, TokenEvent, TokenOp, encode, fence_of
from shared.keys import RedisKeys
from workers.fencing import FenceLog
from workers.handlers import RawRecord, prepare_batch

KEYRING = Keyring({"k": b"k" * 32}, "k")
KEYS = RedisKeys("ns")


def token(seq: int, op: TokenOp = TokenOp.ISSUED) -> TokenEvent:
    return TokenEvent(seq, op, "a" * 64, 1, "User", "1", "n", ("*",), 1, 1, None, 1)


def record(
    event: TokenEvent | Heartbeat, partition: int, offset: int, epoch: int | None
) -> RawRecord:
    value = encode(event)
    fence = [] if epoch is None else [(FENCE_HEADER, str(epoch).encode())]
    headers = KEYRING.sign(event.key, value, fence)
    return RawRecord(partition, offset, event.key, value, headers)


def test_a_record_of_an_older_epoch_after_a_newer_one_is_dead_lettered_as_fenced() -> None:
    fences = FenceLog()
    records = [
        record(token(5), 0, 0, 1),
        record(token(9, TokenOp.REVOKED), 0, 1, 2),  # the new relay
        record(token(5), 0, 2, 1),  # the old relay, resumed: an older version
        record(Heartbeat(0, 1_000, 5), 0, 3, 1),  # and a heartbeat it computed before
    ]
    batch = prepare_batch(records, KEYRING, KEYS, fences=fences)
    assert [encode(token(5)), encode(token(9, TokenOp.REVOKED))] == batch.values
    assert [("fenced", 2), ("fenced", 3)] == [
        (d.reason, d.record.offset) for d in batch.dead_letters
    ]
    assert {} == batch.beats
    assert {0: 4} == batch.next_offsets
    assert 2 == fences.epoch(0)


def test_fenced_records_hold_no_receipt_back_in_the_regions_dead_letter_set() -> None:
    fences = FenceLog()
    records = [record(token(9), 0, 0, 2), record(token(5), 0, 1, 1)]
    batch = prepare_batch(records, KEYRING, KEYS, fences=fences)
    assert ["fenced"] == [d.reason for d in batch.dead_letters]
    letters = batch.script_args("gen", 1000, KEYS)[9]
    assert isinstance(letters, bytes)
    assert [] == orjson.loads(letters)


def test_records_without_a_fencing_epoch_are_applied_as_before() -> None:
    fences = FenceLog()
    records = [record(token(9), 0, 0, 2), record(token(10), 0, 1, None)]
    batch = prepare_batch(records, KEYRING, KEYS, fences=fences)
    assert [] == batch.dead_letters
    assert 2 == len(batch.values)


def test_epochs_are_fenced_per_partition() -> None:
    fences = FenceLog()
    records = [record(token(9), 0, 0, 2), record(token(5), 1, 0, 1)]
    batch = prepare_batch(records, KEYRING, KEYS, fences=fences)
    assert [] == batch.dead_letters


def test_a_partition_read_again_from_before_a_take_over_accepts_the_older_epochs_records() -> None:
    fences = FenceLog()
    first = [record(token(5), 0, 10, 1), record(token(9), 0, 11, 2), record(token(6), 0, 12, 1)]
    assert ["fenced"] == [
        d.reason for d in prepare_batch(first, KEYRING, KEYS, fences=fences).dead_letters
    ]
    again = prepare_batch(first, KEYRING, KEYS, fences=fences)  # a rewind to offset 10
    assert [12] == [d.record.offset for d in again.dead_letters]
    assert 2 == len(again.values)


def test_a_fence_log_remembers_each_take_over_by_its_first_offset() -> None:
    fences = FenceLog()
    assert fences.admit(0, 5, 1) is None
    assert fences.admit(0, 9, 3) is None
    assert fences.admit(0, 7, 2) is None  # read again before the epoch-3 mark
    assert 3 == fences.admit(0, 10, 2)
    assert 2 == fences.admit(0, 8, 1)
    assert fences.admit(0, 6, 1) is None
    assert fences.admit(0, 11, None) is None


def test_a_malformed_fencing_header_is_a_decode_error_and_a_missing_one_is_none() -> None:
    assert fence_of([]) is None
    assert 7 == fence_of([(FENCE_HEADER, b"7")])
    batch = prepare_batch(
        [
            RawRecord(
                0,
                0,
                b"heartbeat:0",
                encode(Heartbeat(0, 1, 1)),
                KEYRING.sign(b"heartbeat:0", encode(Heartbeat(0, 1, 1)), [(FENCE_HEADER, b"-1")]),
            )
        ],
        KEYRING,
        KEYS,
        fences=FenceLog(),
    )
    assert ["decode"] == [d.reason for d in batch.dead_letters]


def test_a_fencing_header_added_changed_or_removed_after_signing_is_a_signature_error() -> None:
    genuine = record(token(5), 0, 0, 3)
    unfenced = record(token(5), 0, 0, None)
    others = [(n, v) for n, v in genuine.headers if n != FENCE_HEADER]
    forged = [
        RawRecord(0, 1, genuine.key, genuine.value, [*others, (FENCE_HEADER, b"999")]),
        RawRecord(0, 2, genuine.key, genuine.value, others),
        RawRecord(0, 3, unfenced.key, unfenced.value, [*unfenced.headers, (FENCE_HEADER, b"9")]),
        RawRecord(0, 4, genuine.key, genuine.value, [*genuine.headers, (FENCE_HEADER, b"9")]),
    ]
    fences = FenceLog()
    batch = prepare_batch([genuine, *forged], KEYRING, KEYS, fences=fences)
    assert ["signature"] * 4 == [d.reason for d in batch.dead_letters]
    assert 3 == fences.epoch(0)


def test_a_fenced_record_keeps_the_signature_workers_of_the_earlier_release_verify() -> None:
    value = encode(token(5))
    headers = dict(KEYRING.sign(b"a" * 64, value, [(FENCE_HEADER, b"7")]))
    earlier = hmac.digest(b"k" * 32, b"a" * 64 + b"\0" + value, "sha256").hex().encode()
    assert earlier == headers["ts-sig"]
    assert {"ts-kid", "ts-sig", "ts-fence", "ts-fsig"} == set(headers)
