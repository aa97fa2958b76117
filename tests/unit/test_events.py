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
def test_forged_records_fail_verification(mutate: object) -> None:
    value = encode(EVENT)
    key, value, headers = mutate(EVENT.key, value, OLD.sign(EVENT.key, value))  # type: ignore[operator]
    with pytest.raises(SignatureError):
        decode(key, value, headers, OLD)


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
    ],
)
def test_undecodable_records_are_refused_with_a_reason(value: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        decode(b"k", value, OLD.sign(b"k", value), OLD)
