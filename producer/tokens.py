"""Sanctum 4.x token strings: generate, hash, parse, checksum.

The caller receives ``{id}|{prefix}{40 random [A-Za-z0-9]}{crc32b(random), 8 hex}``;
only ``sha256(plain)`` (everything after ``id|``) is ever stored or published.
Older Sanctum tokens (80 random characters, or 40 without a checksum) carry no
checksum and are looked up by hash like any other.
"""

from __future__ import annotations

import json
import secrets
import string

from shared.errors import UsageError
from shared.tokenformat import ENTROPY_LENGTH, checksum, has_valid_checksum, hash_token

__all__ = [
    "ENTROPY_LENGTH",
    "checksum",
    "decode_abilities",
    "encode_abilities",
    "format_token",
    "generate_token",
    "has_valid_checksum",
    "hash_token",
]

_ALPHABET = string.ascii_letters + string.digits


def generate_token(prefix: str = "") -> str:
    """A new plain token (the part after ``id|``): prefix + 40 random chars + checksum."""
    if "|" in prefix:
        raise UsageError("a token prefix must not contain '|'")
    entropy = "".join(secrets.choice(_ALPHABET) for _ in range(ENTROPY_LENGTH))
    return f"{prefix}{entropy}{checksum(entropy)}"


def format_token(token_id: int, plain: str) -> str:
    """What the caller receives: ``{id}|{plain}``."""
    return f"{token_id}|{plain}"


def encode_abilities(abilities: list[str] | tuple[str, ...]) -> str:
    """The ``abilities`` column as PHP's ``json_encode`` writes it: no spaces, ``\\/``,
    ``\\uXXXX`` for anything beyond ASCII."""
    return json.dumps(list(abilities), separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def decode_abilities(text: str | None) -> tuple[str, ...]:
    """The abilities of a row; ``NULL`` or anything but a JSON list of strings grants none."""
    if text is None:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(a for a in value if isinstance(a, str))
