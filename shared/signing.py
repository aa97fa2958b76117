"""Signing token-stream records: HMAC-SHA256 keys by id, carried in Kafka headers.

The relay signs every record with the keyring's active key; workers verify with every key
the keyring holds (several during a rotation). ``shared.events`` re-exports ``Keyring``.
``ts-sig`` covers the record's key and value (as in earlier releases, whose workers
still verify it); a record with a fencing header (``ts-fence``) also carries ``ts-fsig``,
which covers key, value and the fencing headers, and workers require it. A fencing header
outside a signature could be forged or replayed onto genuine records by anyone able to
write to the topic, raising the epoch a region fences by so that it refuses every genuine
record after it (revocations too) while replayed heartbeats kept it looking fresh.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence

from shared.errors import ConfigError, SignatureError

__all__ = ["FENCE_HEADER", "FENCE_SIG_HEADER", "KID_HEADER", "SIG_HEADER", "Keyring", "Unsigned"]

KID_HEADER = "ts-kid"
SIG_HEADER = "ts-sig"
FENCE_HEADER = "ts-fence"  # the relay's fencing epoch (``shared.events.fence_of``)
FENCE_SIG_HEADER = "ts-fsig"  # the signature of key, value and the fencing headers


_FENCE_TAG = b"\0" + FENCE_HEADER.encode() + b"="


def _fenced(key: bytes, value: bytes, fences: Sequence[bytes]) -> bytes:
    """The bytes ``ts-fsig`` covers: key, value and every fencing header, in order."""
    if len(fences) == 1:  # the relay's case: one fencing header
        return key + b"\0" + value + _FENCE_TAG + fences[0]
    return key + b"\0" + value + b"".join(_FENCE_TAG + raw for raw in fences)


class Keyring:
    """HMAC-SHA256 signing keys by id: one active for signing, all accepted for verifying."""

    __slots__ = ("_active", "_active_id", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if not keys:
            raise ConfigError("a keyring needs at least one signing key")
        if active not in keys:
            raise ConfigError(f"active signing key {active!r} is not among the keys")
        self._keys = dict(keys)
        self._active = active
        self._active_id = active.encode()  # the ``ts-kid`` header's value, encoded once

    def __repr__(self) -> str:
        return f"Keyring(ids={sorted(self._keys)}, active={self._active!r})"

    @property
    def ids(self) -> list[str]:
        """Every key id this keyring verifies, sorted (never the secrets)."""
        return sorted(self._keys)

    def sign(
        self, key: bytes, value: bytes, fence: Sequence[tuple[str, bytes]] = ()
    ) -> list[tuple[str, bytes]]:
        """Kafka headers carrying the key id and the signature of ``key`` and ``value``;
        with a fencing header ``fence``, also ``fence`` and the signature covering it."""
        # one-shot ``hmac.digest`` (C) per MAC: the relay signs every record of a backlog
        secret = self._keys[self._active]
        sig = hmac.digest(secret, key + b"\0" + value, "sha256").hex().encode()
        if not fence:
            return [(KID_HEADER, self._active_id), (SIG_HEADER, sig)]
        fences = [raw for name, raw in fence if name == FENCE_HEADER]
        if not fences:
            return [(KID_HEADER, self._active_id), (SIG_HEADER, sig)]
        fsig = hmac.digest(secret, _fenced(key, value, fences), "sha256").hex().encode()
        return [(KID_HEADER, self._active_id), (SIG_HEADER, sig), *fence, (FENCE_SIG_HEADER, fsig)]

    def verify(self, key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str:
        """Return the key id that signed the record, or raise SignatureError."""
        kid = sig = fsig = None
        fences: list[bytes] = []
        for name, raw in headers:
            if name == KID_HEADER:
                kid = raw
            elif name == SIG_HEADER:
                sig = raw
            elif name == FENCE_HEADER:
                fences.append(raw)
            elif name == FENCE_SIG_HEADER:
                fsig = raw
        if kid is None or sig is None:
            raise SignatureError("record is not signed")
        secret = self._keys.get(kid.decode("utf-8", "replace"))
        if secret is None:
            raise SignatureError(f"unknown signing key id {kid[:32]!r}")
        expected = hmac.digest(secret, key + b"\0" + value, "sha256").hex().encode()
        if not hmac.compare_digest(expected, sig):
            raise SignatureError("signature does not match")
        if fences or fsig is not None:
            if fsig is None:
                raise SignatureError(f"header {FENCE_HEADER!r} is not signed")
            expected = hmac.digest(secret, _fenced(key, value, fences), "sha256").hex().encode()
            if not hmac.compare_digest(expected, fsig):
                raise SignatureError(f"header {FENCE_HEADER!r} does not match its signature")
        return kid.decode()


class Unsigned(Keyring):
    """No per-record MAC: the relay of ``sealed`` mode, whose seals vouch for its records
    (``shared.seal``). Signs nothing and verifies nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        self._keys = {}
        self._active = ""
        self._active_id = b""

    def __repr__(self) -> str:
        return "Unsigned()"

    def sign(
        self, key: bytes, value: bytes, fence: Sequence[tuple[str, bytes]] = ()
    ) -> list[tuple[str, bytes]]:
        """No MAC: only the fencing header, if any (the seal covers it)."""
        return [(name, raw) for name, raw in fence if name == FENCE_HEADER]

    def verify(self, key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str:
        """Never verifies: only seals vouch for records in sealed mode."""
        raise SignatureError("records carry no MAC in sealed mode")
