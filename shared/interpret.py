"""A region's answer read by the one rule set: ``validate.lua``'s reply (and, under the
fallback policy, the token store's) as a ``ValidationResult``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.keys import TokenState
from shared.outcomes import Outcome, Principal, ValidationResult
from shared.policy import Fallback, Policy
from shared.rules import Mode, TokenRecord, judge, region_unavailable_reason
from shared.tokenformat import ParsedToken

__all__ = ["Request", "apply_fallback", "created_at_ms", "interpret"]

_LIVE = TokenState.LIVE.encode()


def _int(value: bytes | None) -> int | None:
    return None if value is None or value == b"" else int(value)


def _abilities(value: bytes | None) -> tuple[str, ...]:
    """The strings of a record's JSON ability list; anything but a list grants nothing (a
    string is not the list of its characters, an object not the list of its keys), as the
    token store reads the same text (``producer.tokens.decode_abilities``)."""
    try:
        decoded = orjson.loads(value or b"[]")
    except orjson.JSONDecodeError:
        return ()
    return tuple(a for a in decoded if isinstance(a, str)) if isinstance(decoded, list) else ()


@dataclass(frozen=True, slots=True)
class Request:
    """One validation call: the token as parsed, what it must be able to do, and when."""

    token: str
    parsed: ParsedToken
    required: tuple[str, ...]
    mode: Mode
    now_ms: int


def interpret(reply: Sequence[Any], request: Request, policy: Policy) -> ValidationResult:
    """Apply the freshness policy and Sanctum's rules (``shared.rules``) to the Lua
    script's reply."""
    ready, oldest, epoch = int(reply[0]), int(reply[1]), int(reply[2])
    now_ms = request.now_ms
    freshness = None if oldest < 0 else max(0.0, (now_ms - oldest) / 1000)
    why_unavailable = (
        "server_changed"  # a promoted replica or restarted primary, not yet caught up
        if ready == -2
        else "server_unverified"  # the server refused INFO: its replication id is unknown
        if ready == -3
        else "incomplete"  # a structure of the cache is missing (evicted or deleted)
        if ready < 0
        else region_unavailable_reason(ready > 0, oldest, now_ms, policy.freshness)
    )
    if why_unavailable is not None:
        return ValidationResult(Outcome.UNAVAILABLE, freshness_s=freshness, reason=why_unavailable)
    state, token_id = reply[3], _int(reply[4])
    if state is None or (
        request.parsed.token_id is not None and token_id != request.parsed.token_id
    ):
        return judge(None, 0, now_ms, source="region", freshness_s=freshness)
    if state != _LIVE:  # a tombstone: revoked one by one
        return ValidationResult(
            Outcome.INVALID, freshness_s=freshness, reason="revoked", source="region"
        )
    principal = Principal(
        tokenable_type=(reply[5] or b"").decode(),
        tokenable_id=(reply[6] or b"").decode(),
        token_id=token_id,
        name=(reply[7] or b"").decode(),
        abilities=_abilities(reply[8]),
        expires_at_ms=_int(reply[11]),
    )
    record = TokenRecord(principal, _int(reply[9]), _int(reply[10]))
    return judge(
        record,
        epoch,
        now_ms,
        required=request.required,
        mode=request.mode,
        expiration_minutes=policy.expiration_minutes,
        source="region",
        freshness_s=freshness,
    )


def apply_fallback(
    fallback: Fallback | None, request: Request, policy: Policy, unavailable: ValidationResult
) -> ValidationResult:
    """Under the ``fallback`` policy, the token store answers (Sanctum's way)."""
    if policy.on_unavailable != "fallback" or fallback is None:
        return unavailable
    answer = fallback.lookup(request.token)
    record = (
        None
        if answer.principal is None
        else TokenRecord(answer.principal, answer.created_at_ms, answer.issued_at_ms)
    )
    return judge(
        record,
        answer.epoch_ms,
        request.now_ms if answer.now_ms is None else answer.now_ms,
        required=request.required,
        mode=request.mode,
        expiration_minutes=policy.expiration_minutes,
        source="store",
    )


def created_at_ms(reply: Sequence[Any]) -> int | None:
    """The token's ``created_at`` in a reply (what the near-cache keeps)."""
    return _int(reply[9])
