"""Sanctum token format against vectors computed by PHP's own hash() and json_encode()."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import producer.tokens
from producer.tokens import (
    checksum,
    decode_abilities,
    encode_abilities,
    format_token,
    generate_token,
    has_valid_checksum,
    hash_token,
)
from shared.errors import UsageError
from shared.tokenformat import parse_presented

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors/sanctum.json").read_text())


@pytest.mark.parametrize("vector", VECTORS["tokens"], ids=lambda v: v["entropy"][:8])
def test_checksum_and_hash_match_php(vector: dict[str, str]) -> None:
    assert vector["crc32b"] == checksum(vector["entropy"])
    assert vector["sha256"] == hash_token(vector["plain"])
    assert has_valid_checksum(vector["plain"], vector["prefix"])
    parsed = parse_presented(f"12|{vector['plain']}")
    assert parsed is not None and (12, vector["sha256"]) == (parsed.token_id, parsed.token_hash)


@pytest.mark.parametrize("vector", VECTORS["legacy"], ids=lambda v: str(len(v["plain"])))
def test_legacy_tokens_hash_like_php_and_parse_without_a_checksum(vector: dict[str, str]) -> None:
    assert vector["sha256"] == hash_token(vector["plain"])
    parsed = parse_presented(vector["plain"])
    assert parsed is not None and vector["sha256"] == parsed.token_hash


@pytest.mark.parametrize("abilities,php", VECTORS["abilities"])
def test_abilities_are_written_as_php_json_encode_writes_them(
    abilities: list[str], php: str
) -> None:
    assert php == encode_abilities(abilities)
    assert tuple(abilities) == decode_abilities(php)


def test_generated_tokens_have_sanctums_shape() -> None:
    plain = generate_token()
    assert re.fullmatch(r"[A-Za-z0-9]{40}[0-9a-f]{8}", plain)
    assert has_valid_checksum(plain)
    prefixed = generate_token("acme_")
    assert prefixed.startswith("acme_") and has_valid_checksum(prefixed, "acme_")
    assert generate_token() != generate_token()
    with pytest.raises(UsageError):
        generate_token("a|b")


def test_a_formatted_token_is_read_back_by_the_one_parser() -> None:
    plain = generate_token()
    parsed = parse_presented(format_token(5, plain))
    assert parsed is not None and (5, hash_token(plain)) == (parsed.token_id, parsed.token_hash)
    assert not hasattr(producer.tokens, "parse_token")  # one token parser (issue 14 item 6)


def test_null_or_garbage_abilities_grant_nothing() -> None:
    assert () == decode_abilities(None)
    assert () == decode_abilities("not json")
    assert () == decode_abilities('{"a": 1}')
