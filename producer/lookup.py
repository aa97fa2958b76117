"""Incident lookups: find a token from what a responder holds (token, bare secret, hash, id)
and ask every region whether it accepts that token now."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from producer.records import TokenInfo
from producer.store import TokenStore
from shared.errors import NotFoundError, UsageError
from shared.keys import RedisKeys
from shared.settings import Region, Settings
from shared.tokenformat import ParsedToken, bearer_token, parse_presented
from shared.validator import Policy, Request, Validator, interpret

__all__ = ["find_token", "hash_of", "regions_accepting", "secret_from_text"]

_HEX = re.compile(r"\A[0-9a-fA-F]{64}\Z")


def secret_from_text(text: str) -> str:
    """What a scanner, a log line or a paste hands over: ``id|secret``, a bare secret, with
    or without ``Bearer`` and surrounding whitespace or quotes."""
    value = text.strip().strip("'\"").strip()
    value = bearer_token(value) or value
    if not value or any(c.isspace() for c in value):
        raise UsageError("expected one token or secret on stdin")
    return value


def find_token(
    store: TokenStore,
    *,
    text: str | None = None,
    token_hash: str | None = None,
    token_id: int | None = None,
) -> TokenInfo:
    """The stored token named by exactly one of a presented text, a SHA-256 hex, an id."""
    if sum(x is not None for x in (text, token_hash, token_id)) != 1:
        raise UsageError("name the token by exactly one of: its text on stdin, --hash, an id")
    if text is not None:
        info = store.find(secret_from_text(text))
    elif token_hash is not None:
        if not _HEX.match(token_hash.strip()):
            raise UsageError("--hash must be the 64 hex digits of the token's SHA-256")
        info = store.find_hash(token_hash.strip().lower())
    else:
        assert token_id is not None
        info = store.get(token_id)
    if info is None:
        raise NotFoundError("no such token in the store (revoked, pruned or never issued)")
    return info


def hash_of(text: str | None, token_hash: str | None) -> str | None:
    """The SHA-256 hex a responder's input names, when it names one (not for a bare id)."""
    if token_hash is not None and _HEX.match(token_hash.strip()):
        return token_hash.strip().lower()
    if text is not None:
        parsed = parse_presented(secret_from_text(text))
        return parsed.token_hash if parsed else None
    return None


def regions_accepting(
    settings: Settings,
    regions: Sequence[Region],
    info: TokenInfo | None,
    token_hash: str | None = None,
) -> dict[str, str]:
    """Per region of ``regions`` (every region: ``producer.receipts.all_regions``): what
    its validators answer for this token now (``valid``, ``invalid``, ``unavailable``,
    or why the region could not be asked). Without ``info`` (the store no longer holds
    it), by ``token_hash`` alone."""
    answers: dict[str, Any] = {}
    digest = info.token_hash if info is not None else token_hash
    if digest is None:
        return {}
    now_ms = int(time.time() * 1000)
    request = Request("", ParsedToken(info.id if info else None, digest), (), "all", now_ms)
    for region in regions:
        validator = Validator.from_url(
            region.redis_url,
            keys=RedisKeys(settings.redis_namespace),
            policy=Policy.from_settings(settings),
        )
        try:
            # the validator's own script, keyed by hash: no plaintext needed
            reply = validator._evalsha(validator.keys.token(digest))
            answers[region.name] = interpret(reply, request, validator.policy).outcome.value
        except Exception as e:  # one region's failure is that region's answer
            answers[region.name] = f"error: {type(e).__name__}"
        finally:
            validator.close()
    return answers
