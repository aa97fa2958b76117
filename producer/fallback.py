"""The ``fallback`` policy's answer: ask the token store directly, the Sanctum way.

A service that wants to keep answering while its region is unavailable passes
``StoreFallback(store)`` to its validator (and so installs ``producer`` too).
Unlike Sanctum it writes no ``last_used_at`` on the request path.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.store import TokenStore, to_ms
from shared.settings import Settings
from shared.validator import FallbackAnswer, Principal

__all__ = ["StoreFallback", "from_settings"]


@dataclass(frozen=True)
class StoreFallback:
    """Looks a presented token up in the store (by id and hash, or by hash)."""

    store: TokenStore

    def lookup(self, token: str) -> FallbackAnswer:
        """The token's principal as the store knows it, or no principal."""
        info = self.store.find(token)
        if info is None:
            return FallbackAnswer(None)
        principal = Principal(
            tokenable_type=info.tokenable_type,
            tokenable_id=str(info.tokenable_id),
            token_id=info.id,
            name=info.name,
            abilities=info.abilities,
            expires_at_ms=None if info.expires_at is None else to_ms(info.expires_at),
        )
        return FallbackAnswer(
            principal, None if info.created_at is None else to_ms(info.created_at)
        )


def from_settings(settings: Settings) -> StoreFallback:
    """A fallback on the store the settings name (the gate finds it by entry point)."""
    return StoreFallback(TokenStore.from_settings(settings, migrate_schema=False))
