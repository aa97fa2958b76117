"""Event types on the token topic, their canonical encoding, decoding and verification.

A record's value is the canonical JSON of one event (sorted keys, no spaces,
integers for times in milliseconds since the epoch, UTC). Its headers carry the
signing key id (``ts-kid``) and an HMAC-SHA256 (``ts-sig``, hex) over
``key + b"\\0" + value`` (``shared.signing``). Decoding checks the signature first,
then the schema version and every field's type; anything else is an
``EventDecodeError``. The relay lease's holder adds its fencing epoch (``ts-fence``;
``workers.fencing`` refuses a lower one after it; records without one pass as before).

Longer than 350 lines: one concept, the record format (each event type, its encoding,
decoding and verification, and the fencing header).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import orjson

from shared.errors import EventDecodeError
from shared.keys import EpochScope
from shared.signing import FENCE_HEADER, KID_HEADER, SIG_HEADER, Keyring

__all__ = [
    "FENCE_HEADER",
    "GLOBAL_SCOPE",
    "KID_HEADER",
    "MAX_RECORD_BYTES",
    "SCHEMA_VERSION",
    "SIG_HEADER",
    "EpochEvent",
    "Event",
    "Heartbeat",
    "Keyring",
    "TokenEvent",
    "TokenOp",
    "ability_scope",
    "canonical_principal_id",
    "check",
    "decode",
    "encode",
    "fence_header",
    "fence_of",
    "heartbeat_key",
    "principal_scope",
    "principal_scopes",
]

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024
GLOBAL_SCOPE = EpochScope.GLOBAL
_HASH = re.compile(r"\A[0-9a-f]{64}\Z")


_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def canonical_principal_id(tokenable_id: str | int) -> str:
    """A principal id as scopes spell it: a UUID in lower case (RFC 9562: UUIDs are
    case-insensitive; Laravel writes them lower case), anything else as it is."""
    text = str(tokenable_id)
    return text.lower() if _UUID.fullmatch(text) else text


def principal_scope(tokenable_type: str, tokenable_id: str | int) -> str:
    """The epoch scope of every token of one principal (its id canonical)."""
    sep = EpochScope.PRINCIPAL_SEPARATOR
    return f"{EpochScope.PRINCIPAL}{tokenable_type}{sep}{canonical_principal_id(tokenable_id)}"


def principal_scopes(tokenable_type: str, tokenable_id: str | int) -> tuple[str, ...]:
    """The scopes whose epochs apply to a token of this principal: the canonical one and,
    for a UUID stored in another case, its spelling as stored (epochs of earlier
    releases; ``validate.lua`` asks for the same)."""
    canonical = principal_scope(tokenable_type, tokenable_id)
    raw = f"{EpochScope.PRINCIPAL}{tokenable_type}{EpochScope.PRINCIPAL_SEPARATOR}{tokenable_id}"
    return (canonical,) if raw == canonical else (canonical, raw)


def ability_scope(ability: str) -> str:
    """The epoch scope of every token whose ability list holds ``ability`` literally."""
    return f"{EpochScope.ABILITY}{ability}"


def fence_header(epoch: int) -> tuple[str, bytes]:
    """The header stamping a record with the publishing relay's fencing epoch."""
    return (FENCE_HEADER, str(epoch).encode())


def fence_of(headers: Sequence[tuple[str, bytes]] | None) -> int | None:
    """The fencing epoch a record carries, None without one; EventDecodeError if malformed."""
    for name, raw in headers or ():
        if name == FENCE_HEADER:
            if not raw.isdigit() or len(raw) > 18:
                raise EventDecodeError(f"header {FENCE_HEADER!r} must be a decimal epoch")
            return int(raw)
    return None


def heartbeat_key(partition: int) -> bytes:
    """The record key of a partition's heartbeats (compaction keeps the newest)."""
    return f"heartbeat:{partition}".encode()


class TokenOp(StrEnum):
    """What happened to a token row."""

    ISSUED = "issued"
    UPDATED = "updated"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A token's state after one change; ``seq`` (the outbox seq) is its version."""

    seq: int
    op: TokenOp
    token_hash: str
    token_id: int | None
    tokenable_type: str
    tokenable_id: str
    name: str
    abilities: tuple[str, ...]
    created_at_ms: int
    issued_at_ms: int
    expires_at_ms: int | None
    at_ms: int

    @property
    def key(self) -> bytes:
        """Kafka key: the token's hash."""
        return self.token_hash.encode()

    def to_json(self) -> dict[str, Any]:
        """The wire form (schema version 1)."""
        return {
            "v": SCHEMA_VERSION,
            "type": "token",
            "seq": self.seq,
            "op": self.op.value,
            "hash": self.token_hash,
            "id": self.token_id,
            "tokenable_type": self.tokenable_type,
            "tokenable_id": self.tokenable_id,
            "name": self.name,
            "abilities": list(self.abilities),
            "created_at": self.created_at_ms,
            "issued_at": self.issued_at_ms,
            "expires_at": self.expires_at_ms,
            "at": self.at_ms,
        }


@dataclass(frozen=True, slots=True)
class EpochEvent:
    """Tokens of ``scope`` issued before ``before_ms`` are revoked."""

    seq: int
    scope: str
    before_ms: int
    at_ms: int

    @property
    def key(self) -> bytes:
        """Kafka key: the scope."""
        return self.scope.encode()

    def to_json(self) -> dict[str, Any]:
        """The wire form (schema version 1)."""
        return {
            "v": SCHEMA_VERSION,
            "type": "epoch",
            "seq": self.seq,
            "scope": self.scope,
            "before": self.before_ms,
            "at": self.at_ms,
        }


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A certificate from the relay: every change committed to the store before ``at_ms``
    (the store's clock, never the relay's) has been published, into every partition,
    ahead of this record; ``seq`` is the highest outbox seq published so far.

    During a backlog or a pending backfill ``at_ms`` stays at the oldest unpublished
    change, so a region's freshness (the age of its oldest partition heartbeat) counts
    from what it may be missing, and ``at_ms`` is never ahead of the store's clock."""

    partition: int
    at_ms: int
    seq: int

    @property
    def key(self) -> bytes:
        """Kafka key: one per partition."""
        return heartbeat_key(self.partition)

    def to_json(self) -> dict[str, Any]:
        """The wire form (schema version 1)."""
        return {
            "v": SCHEMA_VERSION,
            "type": "heartbeat",
            "partition": self.partition,
            "at": self.at_ms,
            "seq": self.seq,
        }


Event = TokenEvent | EpochEvent | Heartbeat


def encode(event: Event) -> bytes:
    """The canonical bytes of an event."""
    return orjson.dumps(event.to_json(), option=orjson.OPT_SORT_KEYS)


def _int(data: Mapping[str, Any], name: str, *, nullable: bool = False) -> Any:
    value = data.get(name)
    if value is None and nullable:
        return None
    if type(value) is not int or value < 0:
        raise EventDecodeError(f"field {name!r} must be a non-negative integer")
    return value


def _str(data: Mapping[str, Any], name: str, limit: int = 1024) -> str:
    value = data.get(name)
    if type(value) is not str or len(value) > limit:
        raise EventDecodeError(f"field {name!r} must be a string of at most {limit} characters")
    return value


def _abilities(value: Any) -> tuple[str, ...]:
    if type(value) is not list or len(value) > 256:
        raise EventDecodeError("field 'abilities' must be a list of at most 256 strings")
    if not all(type(a) is str and len(a) <= 255 for a in value):
        raise EventDecodeError("field 'abilities' must hold strings of at most 255 characters")
    return tuple(value)


_OPS = {op.value: op for op in TokenOp}


def _token_fields(data: Mapping[str, Any]) -> tuple[Any, ...]:
    """The validated values of a token event, in ``TokenEvent``'s field order."""
    token_hash = _str(data, "hash", 64)
    if not _HASH.match(token_hash):
        raise EventDecodeError("field 'hash' must be 64 lowercase hex digits")
    op = _OPS.get(data.get("op"))  # type: ignore[arg-type]
    if op is None:
        raise EventDecodeError(f"unknown token op {str(data.get('op'))[:32]!r}")
    return (
        _int(data, "seq"),
        op,
        token_hash,
        _int(data, "id", nullable=True),
        _str(data, "tokenable_type", 255),
        _str(data, "tokenable_id", 255),
        _str(data, "name", 4096),
        _abilities(data.get("abilities")),
        _int(data, "created_at"),
        _int(data, "issued_at"),
        _int(data, "expires_at", nullable=True),
        _int(data, "at"),
    )


def _epoch_fields(data: Mapping[str, Any]) -> tuple[int, str, int, int]:
    return _int(data, "seq"), _str(data, "scope", 600), _int(data, "before"), _int(data, "at")


def _decode_body(data: Mapping[str, Any]) -> Event:
    kind = data.get("type")
    if kind == "token":
        return TokenEvent(*_token_fields(data))
    if kind == "epoch":
        return EpochEvent(*_epoch_fields(data))
    if kind == "heartbeat":
        return Heartbeat(_int(data, "partition"), _int(data, "at"), _int(data, "seq"))
    raise EventDecodeError(f"unknown event type {str(kind)[:32]!r}")


def _verified_json(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    keyring: Keyring | None,
) -> dict[str, Any]:
    if not value:
        raise EventDecodeError("record has no value")
    if len(value) > MAX_RECORD_BYTES:
        raise EventDecodeError(f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    if keyring is not None:  # None: a seal vouched for the record (``shared.seal``)
        keyring.verify(key or b"", value, headers or ())
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise EventDecodeError("record value is not JSON") from e
    if type(data) is not dict:
        raise EventDecodeError("record value is not a JSON object")
    if data.get("v") != SCHEMA_VERSION:
        raise EventDecodeError(f"unknown schema version {str(data.get('v'))[:16]!r}")
    return data


def decode(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    keyring: Keyring,
) -> Event:
    """Verify and decode one record, or raise SignatureError / EventDecodeError."""
    event = _decode_body(_verified_json(key, value, headers, keyring))
    if key is not None and event.key != key:
        raise EventDecodeError("record key does not match the event it carries")
    return event


def check(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    keyring: Keyring | None,
) -> Heartbeat | None:
    """Verify and validate one record exactly as ``decode`` does, building only heartbeats.

    The worker's hot path: it forwards a verified token or epoch event to Redis as the
    bytes that were signed, so building the event object would be wasted work.
    Returns the heartbeat, or None for a valid token or epoch event. ``keyring`` None
    skips the HMAC: the caller verified the record's seal and digest instead.
    """
    data = _verified_json(key, value, headers, keyring)
    kind = data.get("type")
    beat: Heartbeat | None = None
    if kind == "token":
        event_key = _token_fields(data)[2].encode()
    elif kind == "epoch":
        event_key = _epoch_fields(data)[1].encode()
    else:
        beat = cast(Heartbeat, _decode_body(data))  # a heartbeat, or EventDecodeError
        event_key = beat.key
    if key is not None and event_key != key:
        raise EventDecodeError("record key does not match the event it carries")
    return beat
