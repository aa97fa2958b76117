"""The names of the watch's settings (``TOKENSYNC_`` + each), known to ``shared.settings``
so that every command accepts them; ``producer.detectors.settings`` parses them."""

from __future__ import annotations

from typing import Final

__all__ = ["DETECTORS", "WATCH_KNOWN"]

DETECTORS: Final = ("MULTI_REGION", "DORMANT", "AFTER_ROTATION", "INVALID_BURST", "PRINCIPAL_JUMP")

WATCH_KNOWN: Final = (
    "USAGE_WINDOW",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_ATTEMPTS",
    *(
        f"DETECT_{name}{suffix}"
        for name in DETECTORS
        for suffix in ("", "_REACTION", "_WINDOW", "_THRESHOLD")
    ),
    "DETECT_INVALID_BURST_REGION_THRESHOLD",
)
