"""A region's Redis: one primary (workers write there) and optional read replicas.

Written ``redis://primary:6379/0;replicas=redis://r1:6379/0,redis://r2:6379/0`` as a
region's URL, in ``TOKENSYNC_REGIONS`` (``eu=<that>,us=redis://...``: a comma followed by
a bare URL continues the replica list, a comma followed by ``NAME=`` starts the next
region) and in ``--redis``. Validators read from the replica their ``TOKENSYNC_READ_FROM``
names (``primary``, ``replica`` = any one, or a replica's ``host:port``) and fall back to the
primary when it does not answer. Redis Sentinel URLs are refused with a clear error:
list the primary and its replicas instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from shared.errors import ConfigError

__all__ = [
    "READ_FROM_CHOICES",
    "REPLICAS_MARK",
    "RegionUrl",
    "choose_read_url",
    "endpoint_of",
    "hide_password",
    "split_regions",
]

REPLICAS_MARK = ";replicas="
SCHEMES = frozenset({"redis", "rediss", "unix"})
READ_FROM_CHOICES = ("primary", "replica")  # or a replica's host:port


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


def hide_password(text: str) -> str:
    """``text`` fit for an error: all before its last ``@`` hidden (a password that did
    not parse, one cut at a comma or holding a '/', '?' or '#'), then any ``?password=``."""
    from shared.settings_file import redact_url

    head, at, host = text.rpartition("@")
    if at:
        scheme, sep, _ = head.partition("://")
        text = f"{scheme}://***@{host}" if sep else f"***@{host}"
    return redact_url(text)


def _check(url: str, what: str) -> str:
    url = url.strip()
    scheme = _scheme(url)
    if scheme.startswith("redis+sentinel"):
        raise ConfigError(
            f"{what} {hide_password(url)!r}: Redis Sentinel URLs are not supported; name the "
            "primary and its replicas: redis://primary/0;replicas=redis://r1/0,redis://r2/0"
        )
    if scheme not in SCHEMES:
        raise ConfigError(f"{what} {hide_password(url)!r} is not a redis:// URL")
    parts = urlsplit(url)
    if parts.scheme != "unix" and not parts.hostname and "@" in url.partition("://")[2]:
        raise ConfigError(  # the netloc ended early: its '@' is in the path, query or fragment
            f"{what} {hide_password(url)!r} names no host: write a '/', '?' or '#' inside a "
            "password as %2F, %3F, %23"
        )
    try:
        _ = parts.port
    except ValueError:  # out of range, not a number (its text may be a piece of a password)
        raise ConfigError(f"{what} {hide_password(url)!r} has a bad port") from None
    return url


def endpoint_of(url: str) -> str:
    """A replica's name as ``TOKENSYNC_READ_FROM`` takes it: ``host:port`` (or the socket path)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def _database(url: str) -> str:
    """The database index a URL selects, as redis-py reads it (``?db=`` first, then the
    path of a TCP URL; 0 by default)."""
    parts = urlsplit(url)
    db = parse_qs(parts.query).get("db", [""])[0]
    if not db and parts.scheme != "unix":
        db = parts.path.strip("/")
    return db or "0"


@dataclass(frozen=True)
class RegionUrl:
    """A region's primary URL and its replicas' URLs."""

    primary: str
    replicas: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, region: str = "") -> RegionUrl:
        """Parse ``PRIMARY[;replicas=URL,URL...]``; ConfigError names what is wrong."""
        what = f"region {region}:" if region else "region URL"
        primary, mark, rest = text.strip().partition(REPLICAS_MARK)
        if ";" in primary:
            raise ConfigError(
                f"{what} write the replicas as ';replicas=URL,URL' (a ';' inside a password as %3B)"
            )
        primary = _check(primary, f"{what} primary")
        replicas = tuple(
            _check(u, f"{what} replica") for u in rest.split(",") if mark and u.strip()
        )
        if mark and not replicas:
            raise ConfigError(f"{what} ';replicas=' names no replica URL")
        seen = [primary, *replicas]
        names = [endpoint_of(u) for u in seen]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"{what} a server is named twice: {', '.join(repeated)}")
        for replica in replicas:  # a replica mirrors every database of its primary
            if _database(replica) != _database(primary):
                raise ConfigError(
                    f"{what} replica {endpoint_of(replica)} is read in database "
                    f"{_database(replica)}, its primary in database {_database(primary)}: "
                    "a replica holds the cache in its primary's database"
                )
        return cls(primary, replicas)

    def __str__(self) -> str:
        if not self.replicas:
            return self.primary
        return f"{self.primary}{REPLICAS_MARK}{','.join(self.replicas)}"


def split_regions(text: str) -> list[tuple[str, str]]:
    """``eu=URL;replicas=A,B,us=URL`` into ``[(eu, URL;replicas=A,B), (us, URL)]``: an item
    that starts with a URL scheme continues the previous region's replica list."""
    items: list[tuple[str, str]] = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = raw.partition("=")
        continues = "://" in name or not sep
        if continues and items and REPLICAS_MARK in items[-1][1] and _scheme(raw) in SCHEMES:
            items[-1] = (items[-1][0], f"{items[-1][1]},{raw}")
            continue
        if continues and items and _scheme(raw) not in SCHEMES:  # maybe a password's tail
            raise ConfigError(
                f"region {items[-1][0]}: the text after a ',' is neither NAME=redis://... nor "
                "a replica URL (write a ',' inside a password as %2C)"
            )
        if continues:
            raise ConfigError(f"region {hide_password(raw)!r} must be NAME=redis://host:port/db")
        items.append((name.strip(), url.strip()))
    return items


def choose_read_url(
    url: RegionUrl, read_from: str, rng: random.Random | None = None
) -> tuple[str, str | None]:
    """The URL a validator reads from and the one it falls back to (None: no fallback).

    ``primary``: the primary. ``replica``: one replica picked at random (the primary when
    the region has none), falling back to the primary. ``host:port``: that replica (or the
    primary, when it names the primary), falling back to the primary.
    """
    if read_from == "primary" or (read_from == "replica" and not url.replicas):
        return url.primary, None
    if read_from == "replica":
        return (rng or random.SystemRandom()).choice(url.replicas), url.primary
    for replica in url.replicas:
        if endpoint_of(replica) == read_from:
            return replica, url.primary
    if endpoint_of(url.primary) == read_from:
        return url.primary, None
    known = ", ".join(endpoint_of(r) for r in url.replicas) or "none"
    raise ConfigError(
        f"TOKENSYNC_READ_FROM={read_from!r} names no replica of this region (its replicas: "
        f"{known}; or primary, replica)"
    )
