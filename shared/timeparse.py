"""Parsing the times and durations people type: ``now``, ISO 8601, ``90s``/``15m``/``2h``/``7d``."""

from __future__ import annotations

import datetime as dt
import re

from shared.errors import UsageError

__all__ = ["parse_duration", "parse_instant"]

_DURATION = re.compile(r"\A(\d+(?:\.\d+)?)(ms|s|m|h|d)?\Z")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``15m``, ``2h``, ``7d`` or ``250ms``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"{text!r} is not a duration (examples: 3600, 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_instant(text: str) -> dt.datetime | None:
    """``now`` gives None (the caller's clock decides); otherwise an aware UTC datetime
    from ISO 8601 (naive means UTC) or Unix seconds."""
    value = text.strip()
    if value.lower() == "now":
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise UsageError(
            f"{text!r} is not a time: use 'now', ISO 8601 (2026-11-29T12:00:00Z) or Unix seconds"
        ) from e
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
