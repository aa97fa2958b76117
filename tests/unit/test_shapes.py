"""Hostile input never gets past the token-shape check, and never reaches Redis.

The oracle here is an independent reading of Sanctum 4.x's token format
(``/work/shared/notes/sanctum-format.md``), written with ``re``, ``zlib`` and
``hashlib`` only, never with ``shared.tokenformat``:

    presented = [id "|"] plain
    plain     = prefix entropy crc32b(entropy)   (Sanctum 4.x)
              | 40 alphanumerics | 80 alphanumerics   (older tokens, no checksum)
    entropy   = 40 of [A-Za-z0-9]; crc32b = zlib CRC-32, 8 lowercase hex digits
    prefix    = up to 64 printable ASCII characters, no '|' and no space
    id        = a row id a BIGINT holds; the lookup hash is SHA-256 hex of ``plain``.

The presented text as a whole is at most 256 characters (tokensync's bound).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from unittest import mock

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.tokenformat import parse_presented
from shared.validator import Outcome, Validator

_ID = re.compile(r"\A([0-9]{1,19})\|")
_LEGACY = re.compile(r"\A(?:[A-Za-z0-9]{40}|[A-Za-z0-9]{80})\Z")
_CURRENT = re.compile(r"\A([!-{}~]{0,64})([A-Za-z0-9]{40})([0-9a-f]{8})\Z")


def spec_crc32b(entropy: str) -> str:
    """PHP's ``hash('crc32b', ...)`` by the definition in the notes."""
    return "%08x" % (zlib.crc32(entropy.encode("ascii")) & 0xFFFFFFFF)


def spec_lookup(text: object) -> tuple[int | None, str] | None:
    """(row id, SHA-256 of the plain part) for a well-formed token, else None."""
    if not isinstance(text, str) or not 0 < len(text) <= 256 or not text.isascii():
        return None
    token_id: int | None = None
    plain = text
    if "|" in text:
        match = _ID.match(text)
        if match is None or int(match.group(1)) > 2**63 - 1:
            return None
        token_id, plain = int(match.group(1)), text[match.end() :]
    current = _CURRENT.match(plain)
    well_formed = bool(_LEGACY.match(plain)) or (
        current is not None and spec_crc32b(current.group(2)) == current.group(3)
    )
    if not well_formed:
        return None
    return token_id, hashlib.sha256(plain.encode("ascii")).hexdigest()


def _parsed(text: object) -> tuple[int | None, str] | None:
    parsed = parse_presented(text)
    return None if parsed is None else (parsed.token_id, parsed.token_hash)


# Written out by hand (checksums and hashes as PHP 8.2's hash() prints them).
ENTROPY = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
HAND_WRITTEN = [
    (
        f"{ENTROPY}8d0bba66",
        (None, "bb745b5454a4550147866ee6829a7cb2ff4a982cf06993a5efa33dd57d030a5a"),
    ),
    (
        f"7|{'0' * 40}963fbb8e",
        (7, "1fef2c4fca28401f0945355f8e4468ab9fd311885e884f5ac5ef2d7a544d5d06"),
    ),
    (
        "12|acme_kQ3vB8nR2xT7wP1mL6cY4hJ9dF5gS0aZeUoIiKqWd2300b94",
        (12, "f866d88c187d5acad8b04d7a256dc94e62d5b5b56b5ef9daae065a69ff2f9165"),
    ),
    (f"{ENTROPY}8d0bba67", None),  # checksum off by one
    (f"{ENTROPY}8D0BBA66", None),  # upper-case hex is not crc32b's output
    (f"{ENTROPY[:-1]}!8d0bba66", None),  # entropy is alphanumeric
    (f"x|{ENTROPY}8d0bba66", None),  # the id is digits
    (f"9223372036854775808|{ENTROPY}8d0bba66", None),  # no BIGINT holds it
    (f"a b{ENTROPY}8d0bba66", None),  # no space in a prefix
    ("", None),
]


@pytest.mark.parametrize("text,expected", HAND_WRITTEN)
def test_hand_written_tokens_parse_to_their_id_and_sha256(
    text: str, expected: tuple[int | None, str] | None
) -> None:
    assert expected == spec_lookup(text), "the spec itself"
    assert expected == _parsed(text)


def test_the_spec_checksum_is_phps_crc32b() -> None:
    assert "8d0bba66" == spec_crc32b(ENTROPY)
    assert "963fbb8e" == spec_crc32b("0" * 40)


hostile = st.one_of(
    st.text(max_size=2000),
    st.text(alphabet="|\x00 \t\n", max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.from_regex(r"\A[0-9]{0,25}\|[A-Za-z0-9|]{0,120}\Z"),
    st.text(min_size=40, max_size=60, alphabet=st.characters(min_codepoint=0x80)),
    st.integers().map(str),
    st.just("9" * 5000),
)
entropy = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    min_size=40,
    max_size=40,
)
prefixes = st.one_of(st.just(""), st.from_regex(r"\A[!-{}~]{1,64}\Z"))
ids = st.one_of(st.none(), st.integers(0, 2**63 - 1), st.integers(2**63, 10**20))


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """Well-formed tokens, some altered in one place (checksum, id, prefix, length)."""
    body = draw(entropy)
    crc = spec_crc32b(body)
    token_id = draw(ids)
    text = f"{draw(prefixes)}{body}{crc}"
    mutation = draw(st.sampled_from(["none", "crc", "drop", "add", "upper"]))
    if mutation == "crc":
        text = text[:-1] + ("0" if text[-1] != "0" else "1")
    elif mutation == "drop":
        text = text[1:]
    elif mutation == "add":
        text += draw(st.sampled_from(["a", "0", "|", " "]))
    elif mutation == "upper":
        text = text.upper()
    return text if token_id is None else f"{token_id}|{text}"


def _offline_validator() -> Validator:
    """A validator whose Redis fails the test if it is ever called."""
    client = mock.Mock(spec=redis.Redis)
    called = AssertionError("Redis was called")
    client.register_script.return_value = mock.Mock(side_effect=called)
    client.evalsha.side_effect = called
    return Validator(client)


OFFLINE = _offline_validator()


@given(st.one_of(hostile, near_misses()))
@settings(max_examples=500)
def test_the_parser_accepts_exactly_what_the_spec_accepts(text: str) -> None:
    assert spec_lookup(text) == _parsed(text)


@given(st.one_of(hostile, near_misses()))
@settings(max_examples=300)
def test_what_the_spec_rejects_is_invalid_without_a_redis_call(text: str) -> None:
    if spec_lookup(text) is None:
        result = OFFLINE.validate(text)
        assert (Outcome.INVALID, "malformed") == (result.outcome, result.reason)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_non_strings_are_invalid(value: object) -> None:
    assert Outcome.INVALID == OFFLINE.validate(value).outcome


@given(entropy, prefixes, ids)
def test_every_well_formed_token_parses_to_the_sha256_of_its_plain_part(
    body: str, prefix: str, token_id: int | None
) -> None:
    plain = f"{prefix}{body}{spec_crc32b(body)}"
    text = plain if token_id is None else f"{token_id}|{plain}"
    expected = None
    if token_id is None or token_id <= 2**63 - 1:
        expected = (token_id, hashlib.sha256(plain.encode()).hexdigest())
    assert expected == _parsed(text)
