"""The ``fallback`` policy's answer: ask the token store directly, the Sanctum way.

A service that wants to keep answering while its region is unavailable passes
``StoreFallback(store)`` to its validator (and so installs ``producer`` too).
The answer carries the row, its issue time and the newest epoch of the store's
epochs table that applies to it, and the validator judges it by the same rules
(``shared.rules``) as a region, with the store's clock (the clock its rows
and epochs carry; a validator's own clock may be wrong, which is often why its
region looks unavailable). Unlike Sanctum it writes no ``last_used_at`` on
the request path.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.store import TokenStore
from producer.token_check import read_stored_token
from shared.settings import Settings
from shared.validator import FallbackAnswer

__all__ = ["StoreFallback", "from_settings"]


@dataclass(frozen=True)
class StoreFallback:
    """Looks a presented token up in the store (by id and hash, or by hash)."""

    store: TokenStore

    def lookup(self, token: str) -> FallbackAnswer:
        """The token's principal, times and applicable epoch as the store knows them."""
        stored = read_stored_token(self.store, token)
        if stored is None:
            return FallbackAnswer(None)
        record = stored.record
        return FallbackAnswer(
            record.principal,
            record.created_at_ms,
            record.issued_at_ms,
            stored.epoch_ms,
            now_ms=stored.store_now_ms,
        )


def from_settings(settings: Settings) -> StoreFallback:
    """A fallback on the store the settings name (the gate finds it by entry point)."""
    return StoreFallback(TokenStore.from_settings(settings, migrate_schema=False))
