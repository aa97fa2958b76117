"""Sealed batches: Ed25519 seals over SHA-256 digests of the records they vouch for.

The authority (the relay) alone holds an Ed25519 private key. After the records it
produces into a partition it appends a *seal* record to the same partition: the
canonical JSON of ``{topic, partition, kid, count, digests}``, signed over its key and
value (headers ``ts-seal-kid``, ``ts-seal-sig``). A record's digest is SHA-256 over its
key, value and every header except the ones that only carry per-record MACs or tracing
(``UNSEALED_HEADERS``); each part is length-prefixed, so no two records share one.

A worker verifies one signature per seal and one digest per record, and applies a record
only once a valid seal covering it was read (``workers.handlers.SealGate``).

Seal keys are ``seal:`` + SHA-256 of the partition and the sorted record keys it covers,
so compaction keeps a seal at least as long as the newest records of its key set: a
newer seal of the same key set follows newer records of every one of its keys. The
``cryptography`` package (extras ``producer`` and ``worker``) is imported only here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import ConfigError, SignatureError

__all__ = [
    "MAX_DIGESTS_PER_SEAL",
    "SEAL_KEY_PREFIX",
    "SEAL_KID_HEADER",
    "SEAL_SIG_HEADER",
    "UNSEALED_HEADERS",
    "RetiredKeyError",
    "Seal",
    "SealSigner",
    "SealVerifier",
    "is_seal_key",
    "key_id_of",
    "load_private_key",
    "record_digest",
    "seal_key",
]

SEAL_KEY_PREFIX = b"seal:"
SEAL_KID_HEADER = "ts-seal-kid"
SEAL_SIG_HEADER = "ts-seal-sig"
#: Headers a seal does not cover: the per-record HMAC of ``both`` mode, trace context and
#: ``keys reseal``'s mark (so its seal covers the original of a copy as well).
UNSEALED_HEADERS = frozenset({"ts-kid", "ts-sig", "traceparent", "tracestate", "ts-reseal"})
#: One seal vouches for at most this many records (32 bytes each: a 32 KiB digest list).
MAX_DIGESTS_PER_SEAL = 1024
_DOMAIN = b"tokensync-seal-v1\0"
_SEAL_SCHEMA = 1
_MAX_SEAL_BYTES = 64 * 1024


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            "sealed signing needs the cryptography package: pip install 'tokensync[worker]' "
            "(or [producer])"
        ) from e
    return ed25519


def is_seal_key(key: bytes | None) -> bool:
    """Whether a record key is a seal's."""
    return key is not None and key.startswith(SEAL_KEY_PREFIX)


def record_digest(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> bytes:
    """SHA-256 over the length-prefixed key, value and covered headers of one record;
    SignatureError for a header name of over 65,535 bytes or a null header value (no seal
    can cover either)."""
    k, v = key or b"", value or b""
    parts = [len(k).to_bytes(4, "big"), k, len(v).to_bytes(4, "big"), v]
    for name, raw in headers:
        if name in UNSEALED_HEADERS:
            continue
        encoded = name.encode()
        if len(encoded) > 0xFFFF:
            raise SignatureError(f"a header name of {len(encoded)} bytes cannot be sealed")
        if raw is None:  # Kafka header values are nullable; the relay never writes one
            raise SignatureError(f"header {name[:64]!r} has a null value: it cannot be sealed")
        parts += [len(encoded).to_bytes(2, "big"), encoded, len(raw).to_bytes(4, "big"), raw]
    return hashlib.sha256(b"".join(parts)).digest()


def seal_key(partition: int, record_keys: Iterable[bytes]) -> bytes:
    """The seal's record key: one per (partition, set of record keys covered)."""
    h = hashlib.sha256(partition.to_bytes(4, "big"))
    for k in sorted(set(record_keys)):
        h.update(len(k).to_bytes(4, "big") + k)
    return SEAL_KEY_PREFIX + h.hexdigest().encode()


def key_id_of(public_raw: bytes) -> str:
    """A key id derived from the public key (``ed25519-`` + 12 hex digits)."""
    return "ed25519-" + hashlib.sha256(public_raw).hexdigest()[:12]


def load_private_key(pem: bytes) -> Any:
    """An Ed25519 private key from PKCS#8 PEM, or ConfigError."""
    from cryptography.hazmat.primitives import serialization

    _ed25519()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"not a PEM private key: {e}") from e
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise ConfigError("the seal key is not an Ed25519 private key")
    return key


@dataclass(frozen=True, slots=True)
class Seal:
    """A verified seal: where it vouches, by which key, for which digests."""

    topic: str
    partition: int
    kid: str
    digests: frozenset[bytes]


class SealSigner:
    """The relay's side: builds seal records with the authority's private key."""

    __slots__ = ("_private", "kid")

    def __init__(self, kid: str, private: Any) -> None:
        self.kid = kid
        self._private = private

    def __repr__(self) -> str:
        return f"SealSigner(kid={self.kid!r})"

    def seals(
        self, topic: str, partition: int, covered: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        """Seal records (key, value, headers) for ``covered`` records of one partition,
        given as (record key, digest), one seal per ``MAX_DIGESTS_PER_SEAL`` records."""
        out = []
        for start in range(0, len(covered), MAX_DIGESTS_PER_SEAL):
            chunk = covered[start : start + MAX_DIGESTS_PER_SEAL]
            digests = b"".join(d for _, d in chunk)
            value = orjson.dumps(
                {
                    "v": _SEAL_SCHEMA,
                    "type": "seal",
                    "topic": topic,
                    "partition": partition,
                    "kid": self.kid,
                    "count": len(chunk),
                    "digests": base64.b64encode(digests).decode(),
                },
                option=orjson.OPT_SORT_KEYS,
            )
            key = seal_key(partition, (k for k, _ in chunk))
            sig = self._private.sign(_DOMAIN + key + b"\0" + value)
            headers = [
                (SEAL_KID_HEADER, self.kid.encode()),
                (SEAL_SIG_HEADER, base64.b64encode(sig)),
            ]
            out.append((key, value, headers))
        return out


class RetiredKeyError(SignatureError):
    """A seal by a key the region knows as retired: it vouches for nothing (a compacted
    topic keeps such seals until ``keys reseal`` replaced them and compaction ran)."""


class SealVerifier:
    """A region's side: the public keys it accepts, by key id (several during rotation),
    and the ids it knows as retired."""

    __slots__ = ("_keys", "retired")

    def __init__(self, public_keys: Mapping[str, bytes], retired: Iterable[str] = ()) -> None:
        if not public_keys:
            raise ConfigError("sealed mode needs at least one seal public key")
        ed = _ed25519()
        keys = {}
        for kid, raw in public_keys.items():
            try:
                keys[kid] = ed.Ed25519PublicKey.from_public_bytes(raw)
            except ValueError as e:
                raise ConfigError(f"seal public key {kid!r} is not a raw Ed25519 key") from e
        self._keys = keys
        self.retired = frozenset(retired) - set(keys)

    def __repr__(self) -> str:
        return f"SealVerifier(ids={self.ids})"

    @property
    def ids(self) -> list[str]:
        """The key ids accepted, sorted."""
        return sorted(self._keys)

    def verify(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        topic: str,
        partition: int,
    ) -> Seal:
        """The seal a record carries, verified for ``topic`` and ``partition``, or
        SignatureError (unknown or retired key, bad signature, wrong place, bad shape)."""
        from cryptography.exceptions import InvalidSignature

        if not key or not value:
            raise SignatureError("seal has no key or value")
        if len(value) > _MAX_SEAL_BYTES:
            raise SignatureError(f"seal of {len(value)} bytes exceeds {_MAX_SEAL_BYTES}")
        kid = sig = None
        for name, raw in headers:
            if name == SEAL_KID_HEADER:
                kid = raw
            elif name == SEAL_SIG_HEADER:
                sig = raw
        if kid is None or sig is None:
            raise SignatureError("seal is not signed")
        public = self._keys.get(kid.decode("utf-8", "replace"))
        if public is None and kid.decode("utf-8", "replace") in self.retired:
            raise RetiredKeyError(f"seal by the retired key {kid.decode()}")
        if public is None:
            raise SignatureError(f"unknown or retired seal key id {kid[:32]!r}")
        try:
            public.verify(base64.b64decode(sig, validate=True), _DOMAIN + key + b"\0" + value)
        except (InvalidSignature, binascii.Error, ValueError) as e:
            raise SignatureError("seal signature does not match") from e
        return _seal_body(value, kid.decode(), topic, partition)


def _seal_body(value: bytes, kid: str, topic: str, partition: int) -> Seal:
    """The seal a verified value states, checked against where it was read."""
    data = orjson.loads(value)  # signed by the authority: well-formed unless its bug
    if data.get("v") != _SEAL_SCHEMA or data.get("type") != "seal":
        raise SignatureError("unknown seal schema")
    if data.get("kid") != kid:
        raise SignatureError("seal names another key id than its header")
    if data.get("topic") != topic:
        raise SignatureError(f"seal is for topic {str(data.get('topic'))[:64]!r}")
    if data.get("partition") != partition:
        raise SignatureError(f"seal is for partition {data.get('partition')!r}")
    raw = base64.b64decode(data.get("digests", ""))
    if len(raw) % 32 or len(raw) // 32 != data.get("count"):
        raise SignatureError("seal digest list is malformed")
    digests = frozenset(raw[i : i + 32] for i in range(0, len(raw), 32))
    return Seal(topic, partition, kid, digests)
