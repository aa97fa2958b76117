"""Region keys: each region's worker signs what it sends back (usage reports) with a key
of its own, so the store attributes every report to the region that signed it and a
region can speak only for itself (the shared keyring, which every region holds, cannot).

HMAC-SHA256 with a per-region secret: the store is the only verifier and holds every
region's secret; a region holds only its own. ``TOKENSYNC_REGION_KEY=kid:base64secret``
is the worker's; ``TOKENSYNC_REGION_KEYS=eu=kid:base64secret,us=kid:base64secret`` the
store's (a region may be listed twice during a rotation). The MAC covers the record's key
(the region's name) and value, carried in the ``ts-region-kid``/``ts-region-sig`` headers
(apart from the keyring's ``ts-kid``/``ts-sig``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import ConfigError, SignatureError

__all__ = [
    "REGION_KID_HEADER",
    "REGION_SIG_HEADER",
    "CoSigned",
    "RegionKey",
    "RegionKeys",
    "Signer",
    "format_region_key",
    "format_region_keys",
    "parse_region_key",
    "parse_region_keys",
    "usage_signer",
]

REGION_KID_HEADER = "ts-region-kid"
REGION_SIG_HEADER = "ts-region-sig"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Signer(Protocol):
    """What signs a record: the shared keyring or a region key."""

    def sign(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]: ...


def _secret(kid: str, text: str, setting: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ConfigError(f"{setting}: region key {kid!r} is not valid base64") from e
    if len(raw) < 16:
        raise ConfigError(f"{setting}: region key {kid!r} is shorter than 16 bytes")
    return raw


def _kid_secret(text: str, setting: str) -> tuple[str, bytes]:
    kid, sep, secret = text.strip().partition(":")
    kid = kid.strip()
    if not sep or not _NAME.match(kid):
        raise ConfigError(
            f"{setting} must be KEY_ID:BASE64_SECRET (key id: letters, digits, '-' or '_')"
        )
    return kid, _secret(kid, secret.strip(), setting)


@dataclass(frozen=True)
class RegionKey:
    """One region's own signing key (the worker's ``TOKENSYNC_REGION_KEY``)."""

    kid: str
    secret: bytes = field(repr=False)

    def sign(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """Kafka headers carrying the key id and the MAC of ``key`` and ``value``."""
        mac = hmac.digest(self.secret, key + b"\0" + value, "sha256").hex().encode()
        return [(REGION_KID_HEADER, self.kid.encode()), (REGION_SIG_HEADER, mac)]


def parse_region_key(text: str, setting: str = "TOKENSYNC_REGION_KEY") -> RegionKey | None:
    """``kid:base64secret`` (None when empty)."""
    if not text.strip():
        return None
    return RegionKey(*_kid_secret(text, setting))


def format_region_key(key: RegionKey | None) -> str:
    """The setting's text of ``key`` (secret included: settings files only)."""
    return "" if key is None else f"{key.kid}:{base64.b64encode(key.secret).decode()}"


class RegionKeys:
    """Every region's keys, as the store knows them: region -> key id -> secret."""

    __slots__ = ("_by_kid", "_by_region")

    def __init__(self, keys: Mapping[str, Mapping[str, bytes]] | None = None) -> None:
        self._by_region = {region: dict(kids) for region, kids in (keys or {}).items()}
        self._by_kid: dict[str, tuple[str, bytes]] = {}
        for region, kids in self._by_region.items():
            for kid, secret in kids.items():
                if kid in self._by_kid:
                    raise ConfigError(f"region key id {kid!r} is given to two regions")
                self._by_kid[kid] = (region, secret)

    def __repr__(self) -> str:  # never the secrets
        shown = {r: sorted(k) for r, k in sorted(self._by_region.items())}
        return f"RegionKeys({shown})"

    def __bool__(self) -> bool:
        return bool(self._by_kid)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionKeys) and other._by_region == self._by_region

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._by_kid)))

    @property
    def regions(self) -> frozenset[str]:
        """The regions that sign with a key of their own."""
        return frozenset(r for r, kids in self._by_region.items() if kids)

    def kids(self, region: str) -> list[str]:
        """The key ids of ``region``, sorted (never the secrets)."""
        return sorted(self._by_region.get(region, {}))

    def key_of(self, region: str) -> RegionKey | None:
        """The key ``region`` signs with when the worker is given this whole list (one
        settings file for every process of a host): the last one listed for it."""
        kids = self._by_region.get(region)
        if not kids:
            return None
        kid, secret = list(kids.items())[-1]
        return RegionKey(kid, secret)

    def items(self) -> Iterable[tuple[str, str, bytes]]:
        """(region, key id, secret) of every key (settings files only)."""
        for region, kids in self._by_region.items():
            for kid, secret in kids.items():
                yield region, kid, secret

    def signer(self, key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str | None:
        """The region whose key signed the record; None when no region key signed it;
        SignatureError when its key id is unknown or the MAC does not match."""
        kid = sig = None
        for name, raw in headers:
            if name == REGION_KID_HEADER:
                kid = raw
            elif name == REGION_SIG_HEADER:
                sig = raw
        if (kid is None and sig is None) or not self._by_kid:
            return None  # no region keys configured: the shared keyring decides
        if kid is None or sig is None:
            raise SignatureError("record carries half a region signature")
        known = self._by_kid.get(kid.decode("utf-8", "replace"))
        if known is None:
            raise SignatureError(f"unknown region key id {kid[:32]!r}")
        region, secret = known
        expected = hmac.digest(secret, key + b"\0" + value, "sha256").hex().encode()
        if not hmac.compare_digest(expected, sig):
            raise SignatureError("region signature does not match")
        return region

    def verify(self, key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str:
        """The signing region, or SignatureError (a record no region key signed too)."""
        region = self.signer(key, value, headers)
        if region is None:
            raise SignatureError("record is not signed by a region key")
        return region


@dataclass(frozen=True)
class CoSigned:
    """Signs with the shared keyring and the region's own key: a store that knows the
    region's key believes only that one; one that does not yet (rolling the keys out:
    workers first, then the store) still verifies the keyring's MAC."""

    keyring: Signer
    own: RegionKey

    def sign(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """Both signatures' headers."""
        return self.keyring.sign(key, value) + self.own.sign(key, value)


def usage_signer(keyring: Signer, region: str, own: RegionKey | None, keys: RegionKeys) -> Signer:
    """What a region's worker signs its usage reports with: its own key
    (``TOKENSYNC_REGION_KEY``, else its entry of ``TOKENSYNC_REGION_KEYS``) beside the
    keyring; the keyring alone while it has none."""
    mine = own or keys.key_of(region)
    return keyring if mine is None else CoSigned(keyring, mine)


def parse_region_keys(text: str, setting: str = "TOKENSYNC_REGION_KEYS") -> RegionKeys:
    """``eu=kid:base64secret,us=kid2:base64secret`` (a region twice: two keys, rotation)."""
    keys: dict[str, dict[str, bytes]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        region, sep, rest = item.partition("=")
        region = region.strip()
        if not sep or not _NAME.match(region):
            raise ConfigError(f"{setting} must be REGION=KEY_ID:BASE64_SECRET, comma separated")
        kid, secret = _kid_secret(rest, setting)
        keys.setdefault(region, {})[kid] = secret
    return RegionKeys(keys)


def format_region_keys(keys: RegionKeys) -> str:
    """The setting's text of ``keys`` (secrets included: settings files only)."""
    return ",".join(
        f"{region}={kid}:{base64.b64encode(secret).decode()}"
        for region, kid, secret in keys.items()
    )
