"""What the signing mode (``TOKENSYNC_SIGNING_MODE``) changes for the relay.

``hmac``: every record carries its HMAC (``shared.signing``), no seals. ``both``: HMAC
and seals (workers of either mode accept the stream during a switch). ``sealed``: seals
only (``shared.seal``): no region holds anything that makes records others accept.
"""

from __future__ import annotations

from collections.abc import Callable

from producer.publisher import EventPublisher, SealingPublisher
from shared.seal_keys import signer_from
from shared.settings import Settings
from shared.signing import Keyring, Unsigned

__all__ = ["record_keyring", "sealing"]


def record_keyring(settings: Settings, keyring: Keyring) -> Keyring:
    """What signs each record: ``keyring``, or nothing in ``sealed`` mode."""
    return Unsigned() if settings.signing_mode == "sealed" else keyring


def sealing(
    settings: Settings, topic: str, connect: Callable[[], EventPublisher]
) -> Callable[[], EventPublisher]:
    """``connect``, its publishers sealing what they send unless the mode is ``hmac``.
    The private key is loaded now: a missing or exposed one fails at start-up."""
    if settings.signing_mode == "hmac":
        return connect
    signer = signer_from(settings)

    def sealed() -> EventPublisher:
        return SealingPublisher(connect(), topic, signer)

    return sealed
