"""What the token store hands back: a new token (its plaintext shown once), a token row
as listings show it, the outcome of a revocation, and where the relay put an outbox row."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from producer.clock import iso

__all__ = ["IssuedToken", "Mutation", "OutboxPosition", "TokenInfo"]


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``plain_text_token`` (``id|plain``) is shown once and never stored."""

    id: int
    tokenable_type: str
    tokenable_id: int | str
    name: str
    abilities: tuple[str, ...]
    expires_at: dt.datetime | None
    created_at: dt.datetime
    token_hash: str
    seq: int
    plain_text_token: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """What the caller of ``issue`` sees (the only place the plaintext appears)."""
        return {
            "token": self.plain_text_token,
            "id": self.id,
            "seq": self.seq,
            "tokenable_type": self.tokenable_type,
            "tokenable_id": self.tokenable_id,
            "name": self.name,
            "abilities": list(self.abilities),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True)
class TokenInfo:
    """A token row as listings show it (never its hash in full, never its plaintext)."""

    id: int
    tokenable_type: str
    tokenable_id: int | str
    name: str
    abilities: tuple[str, ...]
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    created_at: dt.datetime | None
    token_hash: str = field(repr=False)

    @property
    def hash_prefix(self) -> str:
        """The first 12 hex digits of the token's hash (safe to log)."""
        return self.token_hash[:12]

    def to_json(self) -> dict[str, Any]:
        """A listing entry: never the plaintext, only a prefix of the hash."""
        return {
            "id": self.id,
            "tokenable_type": self.tokenable_type,
            "tokenable_id": self.tokenable_id,
            "name": self.name,
            "abilities": list(self.abilities),
            "hash_prefix": self.hash_prefix,
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True)
class Mutation:
    """The outcome of a revocation: the outbox seq that carries it and the rows it removed."""

    seq: int
    removed: int
    scope: str | None = None
    before_ms: int | None = None
    per_token: int = 0
    audit_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "removed": self.removed,
            "scope": self.scope,
            "before_ms": self.before_ms,
            "per_token": self.per_token,
            "audit_id": self.audit_id,
        }


@dataclass(frozen=True)
class OutboxPosition:
    """Where the relay put an outbox row: its partition and offset once acknowledged."""

    seq: int
    kind: str
    key: str
    partition: int | None
    offset: int | None
    recorded_at_ms: int
    published_at_ms: int | None
