"""Event encoding, signatures and refusals."""

from __future__ import annotations

import pytest

from shared.errors import EventDecodeError, SignatureError
from shared.events import (
    EpochEvent,
    Heartbeat,
    Keyring,
    TokenEvent,
    TokenOp,
    check,
    decode,
    encode,
)

OLD = Keyring({"k1": b"k" * 32}, "k1")
NEW = Keyring({"k1": b"k" * 32, "k2": b"n" * 32}, "k2")
EVENT = TokenEvent(7, TokenOp.ISSUED, "a" * 64, 3, "User", "9", "cli", ("read",), 1, 2, None, 3)


def test_every_event_type_round_trips_through_its_canonical_bytes() -> None:
    for event in (EVENT, EpochEvent(8, "global", 100, 101), Heartbeat(2, 500, 8)):
        value = encode(event)
        assert event == decode(event.key, value, OLD.sign(event.key, value), OLD)
        assert value == encode(decode(event.key, value, OLD.sign(event.key, value), OLD))


def test_check_accepts_what_decode_accepts_and_builds_only_heartbeats() -> None:
    for event in (EVENT, EpochEvent(8, "global", 100, 101)):
        value = encode(event)
        assert check(event.key, value, OLD.sign(event.key, value), OLD) is None
    beat = Heartbeat(2, 500, 8)
    value = encode(beat)
    assert check(beat.key, value, OLD.sign(beat.key, value), OLD) == beat


def test_during_key_rotation_old_and_new_signatures_verify() -> None:
    value = encode(EVENT)
    assert EVENT == decode(EVENT.key, value, OLD.sign(EVENT.key, value), NEW)
    assert EVENT == decode(EVENT.key, value, NEW.sign(EVENT.key, value), NEW)
    with pytest.raises(SignatureError, match="unknown signing key"):
        decode(EVENT.key, value, NEW.sign(EVENT.key, value), OLD)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k, v, h: (k, v.replace(b'"read"', b'"root"'), h),
        lambda k, v, h: (b"b" * 64, v, h),
        lambda k, v, h: (k, v, []),
        lambda k, v, h: (k, v, [("ts-kid", b"k1"), ("ts-sig", b"00" * 32)]),
    ],
    ids=["tampered value", "moved to another key", "unsigned", "wrong signature"],
)
@pytest.mark.parametrize("read", [decode, check])
def test_forged_records_fail_verification(mutate: object, read: object) -> None:
    value = encode(EVENT)
    key, value, headers = mutate(EVENT.key, value, OLD.sign(EVENT.key, value))  # type: ignore[operator]
    with pytest.raises(SignatureError):
        read(key, value, headers, OLD)  # type: ignore[operator]


@pytest.mark.parametrize(
    "value,message",
    [
        (b"", "no value"),
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"v":2,"type":"token"}', "unknown schema version"),
        (b'{"v":1,"type":"nope"}', "unknown event type"),
        (b'{"v":1,"type":"epoch","seq":-1,"scope":"g","before":1,"at":1}', "non-negative"),
        (b"x" * 70_000, "exceeds"),
        (encode(EVENT).replace(b'"issued"', b'"stolen"'), "unknown token op"),
        (encode(EVENT).replace(b'"aaaa', b'"AAAA'), "64 lowercase hex"),
        (encode(EVENT).replace(b'["read"]', b'"read"'), "abilities"),
        (encode(EVENT).replace(b'"tokenable_id":"9"', b'"tokenable_id":9'), "tokenable_id"),
        (encode(EVENT), "key does not match"),
        (encode(Heartbeat(1, 2, 3)), "key does not match"),
        (b'{"v":1,"type":"heartbeat","partition":"1","at":1,"seq":1}', "partition"),
    ],
)
@pytest.mark.parametrize("read", [decode, check])
def test_undecodable_records_are_refused_with_a_reason(
    value: bytes, message: str, read: object
) -> None:
    with pytest.raises(EventDecodeError, match=message):
        read(b"k", value, OLD.sign(b"k", value), OLD)  # type: ignore[operator]
