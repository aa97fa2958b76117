"""The relay's per-row encoding remembers abilities and timestamps it decoded (a backlog's
rows share them); what it answers must not depend on what it saw before."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from zoneinfo import ZoneInfo

import pytest

from producer.outbox import BadRowError, parse_db_time
from shared.events import Keyring
from shared.signing import FENCE_HEADER, _fenced


def test_a_refused_timestamp_is_refused_every_time_not_only_the_first() -> None:
    for _ in range(3):
        with pytest.raises(BadRowError):
            parse_db_time("0000-00-00 00:00:00")


def test_one_timestamp_text_read_in_two_zones_gives_two_instants() -> None:
    text = "2026-01-01 12:00:00"
    utc = parse_db_time(text, dt.UTC)
    berlin = parse_db_time(text, ZoneInfo("Europe/Berlin"))
    assert utc - berlin == 3600 * 1000
    assert parse_db_time(text, dt.UTC) == utc


def test_signatures_are_the_hex_hmac_of_key_and_value_and_of_the_fence() -> None:
    secret = b"s" * 32
    keyring = Keyring({"k1": secret}, "k1")
    fence = [(FENCE_HEADER, b"7")]
    headers = dict(keyring.sign(b"key", b"value", fence))
    mac = hmac.new(secret, b"key\0value", hashlib.sha256).hexdigest().encode()
    assert headers["ts-kid"] == b"k1"
    assert headers["ts-sig"] == mac
    fenced = hmac.new(secret, _fenced(b"key", b"value", [b"7"]), hashlib.sha256)
    assert headers["ts-fsig"] == fenced.hexdigest().encode()
    assert keyring.verify(b"key", b"value", keyring.sign(b"key", b"value", fence)) == "k1"
    assert keyring.verify(b"key", b"value", keyring.sign(b"key", b"value")) == "k1"
