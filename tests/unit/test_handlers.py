"""The worker's batch logic, with values alone: what is applied, what is dead-lettered, offsets."""

from __future__ import annotations

import orjson

from shared.events import EpochEvent, Heartbeat, Keyring, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys
from workers.handlers import RawRecord, prepare_batch

KEYRING = Keyring({"k": b"k" * 32}, "k")
KEYS = RedisKeys("ns")


def record(
    event: TokenEvent | EpochEvent | Heartbeat,
    partition: int,
    offset: int,
    keyring: Keyring = KEYRING,
) -> RawRecord:
    value = encode(event)
    return RawRecord(partition, offset, event.key, value, keyring.sign(event.key, value))


def test_verified_events_travel_as_their_signed_bytes_and_offsets_move_to_the_max() -> None:
    token = TokenEvent(5, TokenOp.ISSUED, "a" * 64, 1, "User", "1", "n", ("*",), 1, 1, None, 1)
    epoch = EpochEvent(6, "global", 10, 10)
    records = [
        record(token, 0, 7),
        record(epoch, 1, 3),
        record(Heartbeat(1, 99, 6), 1, 4),
        record(Heartbeat(0, 50, 6), 0, 2),
    ]
    batch = prepare_batch(records, KEYRING, KEYS)
    assert [encode(token), encode(epoch)] == batch.values
    assert {0: 8, 1: 5} == batch.next_offsets
    assert {0: 50, 1: 99} == batch.beats
    args = batch.script_args("gen", 1000, KEYS)
    assert ["gen", 1000, "ns:inval", "ns:tok:"] == args[:4]
    assert [orjson.loads(encode(token)), orjson.loads(encode(epoch))] == orjson.loads(args[6])
    assert [[0, 8, 50, -1], [1, 5, 99, -1]] == orjson.loads(args[7])  # starts: not stated


def test_refused_records_become_dead_letters_with_a_reason_and_still_advance_offsets() -> None:
    token = TokenEvent(5, TokenOp.ISSUED, "a" * 64, 1, "User", "1", "n", ("*",), 1, 1, None, 1)
    forged = record(token, 0, 1, Keyring({"k": b"x" * 32}, "k"))
    garbage = RawRecord(0, 2, b"k", b"not json", KEYRING.sign(b"k", b"not json"))
    unsigned = RawRecord(0, 3, token.key, encode(token), [])
    batch = prepare_batch([forged, garbage, unsigned], KEYRING, KEYS)
    assert [] == batch.values
    assert ["signature", "decode", "signature"] == [d.reason for d in batch.dead_letters]
    assert {0: 4} == batch.next_offsets


def test_a_heartbeat_claiming_another_partition_does_not_count_as_that_partitions_beat() -> None:
    batch = prepare_batch([record(Heartbeat(2, 500, 0), 0, 0)], KEYRING, KEYS)
    assert {} == batch.beats
    assert 1 == batch.heartbeats


def test_dead_letters_carry_the_seq_their_json_names_but_never_a_heartbeats() -> None:
    token = TokenEvent(5, TokenOp.ISSUED, "a" * 64, 1, "User", "1", "n", ("*",), 1, 1, None, 1)
    forged = record(token, 0, 1, Keyring({"k": b"x" * 32}, "k"))
    beat = record(Heartbeat(0, 50, 77), 0, 2, Keyring({"k": b"x" * 32}, "k"))
    garbage = RawRecord(0, 3, b"k", b"not json", KEYRING.sign(b"k", b"not json"))
    batch = prepare_batch([forged, beat, garbage], KEYRING, KEYS)
    assert [5, -1, -1] == [d.seq for d in batch.dead_letters]
    letters = orjson.loads(batch.script_args("gen", 1000, KEYS)[9])
    assert [["0:1", 5], ["0:2", -1], ["0:3", -1]] == letters


def test_a_heartbeat_stamped_beyond_the_allowance_ahead_is_left_out_and_an_earlier_one_counts() -> (
    None
):
    records = [
        record(Heartbeat(0, 1_000, 6), 0, 1),
        record(Heartbeat(0, 3_600_000, 6), 0, 2),  # an hour ahead of the worker's clock
        record(Heartbeat(1, 2_000, 6), 1, 1),
    ]
    batch = prepare_batch(records, KEYRING, KEYS, beats_until_ms=2_000)
    assert {0: 1_000, 1: 2_000} == batch.beats
    assert [(0, 3_600_000)] == batch.ahead
    assert {0: 3, 1: 2} == batch.next_offsets  # consumed all the same
    assert 3 == batch.heartbeats
