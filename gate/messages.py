"""What the gate reads and answers: a request and a response, the parsing of what a
proxy forwards (abilities, mode, cookies), and the RFC 6750 refusals (``gate.app``
routes requests; ``gate.http`` speaks HTTP)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from shared.outcomes import Outcome, ValidationResult
from shared.rules import Mode

__all__ = [
    "MAX_ABILITIES",
    "MAX_ABILITY_LENGTH",
    "SAFE_METHODS",
    "BadInputError",
    "GateRequest",
    "GateResponse",
    "abilities_from",
    "abilities_header",
    "bad_request",
    "header_value",
    "invalid_request",
    "json_response",
    "parse_cookies",
    "parse_mode",
    "quotable",
    "refusal",
    "scope_of",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAX_ABILITIES = 32
MAX_ABILITY_LENGTH = 128
# printable ASCII but what would split or break a header: space, comma, quote, backslash
_ABILITY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset(',"\\')
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%")


@dataclass(frozen=True, slots=True)
class GateRequest:
    """One parsed HTTP request: header names lowercased, values decoded as latin-1."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class GateResponse:
    """What to send back: status, extra headers, and a body (JSON unless said otherwise)."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    content_type: str = "application/json"
    outcome: str = "ok"


def json_response(
    status: int, body: object, outcome: str, headers: Sequence[tuple[str, str]] = ()
) -> GateResponse:
    return GateResponse(status, headers, orjson.dumps(body), outcome=outcome)


def bad_request(description: str) -> GateResponse:
    return json_response(
        400,
        {"error": "invalid_request", "error_description": description},
        "bad_request",
        [
            (
                "WWW-Authenticate",
                f'Bearer realm="tokensync", error="invalid_request", '
                f'error_description="{quotable(description)}"',
            )
        ],
    )


def quotable(text: str) -> str:
    """Text that fits in a header's quoted-string."""
    return "".join(c for c in text if c not in '"\\' and " " <= c <= "~")


def invalid_request(description: str) -> dict[str, str]:
    return {"error": "invalid_request", "error_description": description}


def header_value(text: str) -> str:
    """A value that is safe in a response header (no CR/LF, ASCII): percent-encoded."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text  # the common case, without quote()'s cost
    return quote(text, safe=_HEADER_SAFE + " ")


# an item of a comma-separated header list: printable ASCII but what would split it
_ITEM_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%,")
# RFC 6749's scope-token: what RFC 7662's space-separated ``scope`` can carry
_SCOPE_TOKEN = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('"\\')


def abilities_header(abilities: Sequence[str]) -> str:
    """``X-Tokensync-Abilities``: the abilities, comma-separated, each percent-encoded where
    it holds a comma, a space, ``%`` or what a header cannot carry, so that one ability never
    reads as two upstream (Sanctum's ``tokenCan`` is exact)."""
    return ",".join(quote(a, safe=_ITEM_SAFE) for a in abilities)


def scope_of(abilities: Sequence[str]) -> str:
    """RFC 7662's ``scope``: the abilities that are RFC 6749 scope-tokens, space-separated;
    an ability holding a space (or a quote, a backslash, a non-ASCII character) is left out
    rather than read as several (the full list is in ``tokensync.abilities``)."""
    return " ".join(a for a in abilities if a and set(a) <= _SCOPE_TOKEN)


class BadInputError(Exception):
    """Raised inside request parsing; becomes a 400 with this description."""


def abilities_from(values: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            if len(item) > MAX_ABILITY_LENGTH or not set(item) <= _ABILITY_CHARS:
                raise BadInputError(
                    "an ability must be printable ASCII without comma, quote or backslash"
                )
            if item not in found:
                found.append(item)
    if len(found) > MAX_ABILITIES:
        raise BadInputError(f"more than {MAX_ABILITIES} abilities")
    return tuple(found)


def parse_mode(value: str | None) -> Mode:
    if value is None or value == "all":
        return "all"
    if value == "any":
        return "any"
    raise BadInputError("mode must be 'all' or 'any'")


def parse_cookies(raw: str) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in jar:
            jar[name] = value.strip().strip('"')
    return jar


def refusal(result: ValidationResult) -> GateResponse:
    """The 401, 403 or 503 answer (with its RFC 6750 challenge) for a result that is not
    valid."""
    if result.outcome is Outcome.FORBIDDEN:
        scope = " ".join(result.missing)
        return json_response(
            403,
            {"error": "insufficient_scope", "missing": list(result.missing)},
            "forbidden",
            [
                (
                    "WWW-Authenticate",
                    f'Bearer realm="tokensync", error="insufficient_scope", scope="{scope}"',
                )
            ],
        )
    if result.outcome is Outcome.UNAVAILABLE:
        return json_response(
            503,
            {
                "error": "temporarily_unavailable",
                "reason": result.reason,
                "freshness_s": result.freshness_s,
            },
            "unavailable",
            [
                ("Retry-After", "1"),
                (
                    "WWW-Authenticate",
                    f'Bearer realm="tokensync", error="temporarily_unavailable", '
                    f'error_description="region {result.reason}"',
                ),
            ],
        )
    return json_response(
        401,
        {"error": "invalid_token", "reason": result.reason},
        "invalid",
        [
            (
                "WWW-Authenticate",
                f'Bearer realm="tokensync", error="invalid_token", '
                f'error_description="token {result.reason}"',
            )
        ],
    )
