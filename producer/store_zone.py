"""The time zone of the token table's naive timestamps (``TOKENSYNC_STORE_TIMEZONE``).

Laravel writes ``created_at``/``expires_at`` as wall-clock times of its
``app.timezone``, without a zone. tokensync works in UTC: the zone is kept on the
engine's dialect (one store per engine), the ``Timestamp`` column type converts on
the way in and out, and the relay reads the outbox's times in it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import sqlalchemy as sa

from shared.errors import ConfigError

__all__ = ["from_store", "parse_zone", "set_zone", "to_store", "zone_of"]

_ATTR = "tokensync_store_zone"


def parse_zone(name: str) -> dt.tzinfo:
    """An IANA zone name (``Europe/Berlin``) or ``UTC``; a ConfigError for anything else."""
    if name.strip().upper() in {"UTC", "Z", "ETC/UTC", ""}:
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(
            f"TOKENSYNC_STORE_TIMEZONE={name!r} is no IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from e


def set_zone(engine: sa.Engine, zone: dt.tzinfo) -> None:
    """Declare the zone of ``engine``'s naive timestamps."""
    setattr(engine.dialect, _ATTR, zone)


def zone_of(dialect: sa.Dialect) -> dt.tzinfo:
    """The zone of a dialect's engine (UTC unless declared)."""
    zone: dt.tzinfo = getattr(dialect, _ATTR, dt.UTC)
    return zone


def to_store(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A naive-UTC (or aware) time as the table's naive wall-clock time in ``zone``."""
    if zone is dt.UTC and value.tzinfo is None:
        return value
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(zone).replace(tzinfo=None)


def from_store(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The table's naive wall-clock time in ``zone`` as naive UTC."""
    if zone is dt.UTC or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)
