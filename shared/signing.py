"""Signing token-stream records: HMAC-SHA256 keys by id, carried in Kafka headers.

The relay signs every record with the keyring's active key; workers verify with every key
the keyring holds (several during a rotation). ``shared.events`` re-exports ``Keyring``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from shared.errors import ConfigError, SignatureError

__all__ = ["KID_HEADER", "SIG_HEADER", "Keyring", "Unsigned"]

KID_HEADER = "ts-kid"
SIG_HEADER = "ts-sig"


class Keyring:
    """HMAC-SHA256 signing keys by id: one active for signing, all accepted for verifying."""

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if not keys:
            raise ConfigError("a keyring needs at least one signing key")
        if active not in keys:
            raise ConfigError(f"active signing key {active!r} is not among the keys")
        self._keys = dict(keys)
        self._active = active

    def __repr__(self) -> str:
        return f"Keyring(ids={sorted(self._keys)}, active={self._active!r})"

    @property
    def ids(self) -> list[str]:
        """Every key id this keyring verifies, sorted (never the secrets)."""
        return sorted(self._keys)

    def sign(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """Kafka headers carrying the key id and the signature of ``key`` and ``value``."""
        mac = hmac.new(self._keys[self._active], key + b"\0" + value, hashlib.sha256)
        return [(KID_HEADER, self._active.encode()), (SIG_HEADER, mac.hexdigest().encode())]

    def verify(self, key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str:
        """Return the key id that signed the record, or raise SignatureError."""
        kid = sig = None
        for name, raw in headers:
            if name == KID_HEADER:
                kid = raw
            elif name == SIG_HEADER:
                sig = raw
        if kid is None or sig is None:
            raise SignatureError("record is not signed")
        secret = self._keys.get(kid.decode("utf-8", "replace"))
        if secret is None:
            raise SignatureError(f"unknown signing key id {kid[:32]!r}")
        expected = hmac.digest(secret, key + b"\0" + value, "sha256").hex().encode()
        if not hmac.compare_digest(expected, sig):
            raise SignatureError("signature does not match")
        return kid.decode()


class Unsigned(Keyring):
    """No per-record MAC: the relay of ``sealed`` mode, whose seals vouch for its records
    (``shared.seal``). Signs nothing and verifies nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        self._keys = {}
        self._active = ""

    def __repr__(self) -> str:
        return "Unsigned()"

    def sign(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """No headers."""
        return []

    def verify(self, key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str:
        """Never verifies: only seals vouch for records in sealed mode."""
        raise SignatureError("records carry no MAC in sealed mode")
