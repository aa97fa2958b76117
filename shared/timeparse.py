"""Parsing the times and durations people type: ``now``, ISO 8601, ``90s``/``15m``/``2h``/``7d``."""

from __future__ import annotations

import datetime as dt
import re

from shared.errors import UsageError

__all__ = ["MAX_DURATION_S", "parse_duration", "parse_instant"]

_DURATION = re.compile(r"\A(\d{1,30}(?:\.\d{1,30})?)(ms|s|m|h|d)?\Z")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

MAX_DURATION_S = 100 * 366 * 86400
"""The longest duration accepted (100 years): a lifetime, grace or look-back beyond it
is a typo, and a time that far ahead does not fit the columns (year 9999)."""


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``15m``, ``2h``, ``7d`` or ``250ms`` (at most
    ``MAX_DURATION_S``)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"{text[:40]!r} is not a duration (examples: 3600, 90s, 15m, 2h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise UsageError(f"a duration is limited to 100 years ({MAX_DURATION_S // 86400}d)")
    return seconds


def parse_instant(text: str) -> dt.datetime | None:
    """``now`` gives None (the caller's clock decides); otherwise an aware UTC datetime
    from ISO 8601 (naive means UTC) or Unix seconds."""
    value = text.strip()
    if value.lower() == "now":
        return None
    try:
        if re.fullmatch(r"\d{1,30}(\.\d{1,30})?", value):
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError, OSError) as e:  # past year 9999 is no time either
        raise UsageError(
            f"{text[:40]!r} is not a time: use 'now', ISO 8601 (2026-11-29T12:00:00Z) or "
            "Unix seconds, up to year 9999"
        ) from e
