"""Helpers every long-running tokensync process shares: stop on SIGTERM/SIGINT, keyring."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from shared.events import Keyring
from shared.settings import Settings

__all__ = ["keyring_from", "stop_on_signals"]


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the process then shuts down cleanly)."""
    stop = threading.Event()

    def _handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def keyring_from(settings: Settings) -> Keyring:
    """The signing keys of ``settings`` (ConfigError if none are configured)."""
    settings.require_signing_keys()
    return Keyring(settings.signing_keys, settings.signing_key_id)
