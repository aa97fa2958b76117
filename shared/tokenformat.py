"""Sanctum 4.x token strings as validators see them: shape, checksum, hash.

``producer.tokens`` builds on this to generate tokens; validators use it to
reject malformed input before any Redis call.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

__all__ = [
    "ENTROPY_LENGTH",
    "MAX_TOKEN_ID",
    "MAX_TOKEN_LENGTH",
    "ParsedToken",
    "bearer_token",
    "checksum",
    "has_valid_checksum",
    "hash_token",
    "parse_presented",
]

ENTROPY_LENGTH = 40
MAX_TOKEN_LENGTH = 256
MAX_TOKEN_ID = 2**63 - 1
_ALNUM = re.compile(r"\A[A-Za-z0-9]+\Z")
# A prefix (Sanctum's ``token_prefix``) is printable ASCII without '|' or spaces.
_PREFIX = re.compile(r"\A[\x21-\x7b\x7d\x7e]{0,64}\Z")


def checksum(entropy: str) -> str:
    """PHP's ``hash('crc32b', $entropy)``: the zlib CRC-32, 8 lowercase hex digits."""
    return format(zlib.crc32(entropy.encode()) & 0xFFFFFFFF, "08x")


def hash_token(plain: str) -> str:
    """SHA-256 hex of the plain token, as Sanctum stores it in ``token``."""
    return hashlib.sha256(plain.encode()).hexdigest()


def has_valid_checksum(plain: str, prefix: str = "") -> bool:
    """Whether a Sanctum 4.x token carries a correct crc32b of its 40 random characters."""
    body = plain[len(prefix) :] if prefix and plain.startswith(prefix) else plain
    if len(body) != ENTROPY_LENGTH + 8:
        return False
    entropy, crc = body[:ENTROPY_LENGTH], body[ENTROPY_LENGTH:]
    return bool(_ALNUM.match(entropy)) and checksum(entropy) == crc


def bearer_token(header: str | None) -> str | None:
    """The token an ``Authorization`` header value carries (``Bearer <token>``, the scheme
    in any case, surrounding whitespace ignored), or None when it carries none. The one
    reading of a presented bearer value: the middleware, the gate and the admin API."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A well-formed presented token: its optional row id and the hash to look up."""

    token_id: int | None
    token_hash: str


def parse_presented(text: object) -> ParsedToken | None:
    """Parse what a client presented, or None when it cannot be a Sanctum token.

    Accepted: ``[id|][prefix]<40 alnum><crc32b>`` with a correct checksum, and the legacy
    shapes without checksum (40 or 80 alphanumerics). Everything else (wrong shape, bad
    checksum, non-ASCII, control characters, oversized, an id no BIGINT holds) is
    rejected without a lookup.
    """
    if not isinstance(text, str) or not 0 < len(text) <= MAX_TOKEN_LENGTH or not text.isascii():
        return None
    token_id: int | None = None
    plain = text
    if "|" in text:
        head, plain = text.split("|", 1)
        # no row can have an id past BIGINT: a store must not even be asked
        if not head.isdigit() or len(head) > 19 or int(head) > MAX_TOKEN_ID:
            return None
        token_id = int(head)
    if len(plain) in (ENTROPY_LENGTH, 2 * ENTROPY_LENGTH) and _ALNUM.match(plain):
        return ParsedToken(token_id, hash_token(plain))  # legacy, no checksum
    if len(plain) < ENTROPY_LENGTH + 8:
        return None
    prefix, body = plain[: -(ENTROPY_LENGTH + 8)], plain[-(ENTROPY_LENGTH + 8) :]
    if not _PREFIX.match(prefix) or not has_valid_checksum(body):
        return None
    return ParsedToken(token_id, hash_token(plain))
