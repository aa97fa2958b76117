"""An in-process cache of valid answers, invalidated by the region's apply stream.

Every batch a worker applies is announced on the region's invalidation channel
(what tokens changed, whether an epoch moved, the cache generation). A
listener thread drops what changed (everything on an epoch or a new
generation). Entries live at most the staleness budget, and the cache answers
nothing while its listener is disconnected or has heard nothing for that long,
so a revocation is enforced within the same bound as without it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis

from shared.logs import get_logger
from shared.outcomes import Principal

__all__ = ["CachedToken", "NearCache"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CachedToken:
    """What a later call needs to answer without Redis (keyed by the presented text)."""

    key: str
    principal: Principal
    created_at_ms: int | None
    stored_at: float


class NearCache:
    """Presented token -> principal, for at most ``max_age_s``; thread-safe.

    Keyed by the exact text a client presented (so a hit costs no hashing or parsing);
    an index from the token's Redis key finds the entries an invalidation names.
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        *,
        max_age_s: float = 5.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._channel = channel
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._generation: str | None = None
        self._heard_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> int:
        """Bumped by every invalidation; read before a lookup, passed to ``put``."""
        return self._version

    @property
    def live(self) -> bool:
        """Whether the listener heard the region recently enough to trust entries."""
        return self._clock() - self._heard_at <= self.max_age_s

    def start(self) -> NearCache:
        """Start the listener thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._listen, name="tokensync-nearcache", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and forget everything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.clear()

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._drop_all()

    def _drop_all(self) -> None:
        self._entries.clear()
        self._by_key.clear()
        self._version += 1

    def _forget(self, text: str) -> None:
        entry = self._entries.pop(text, None)
        if entry is not None:
            texts = self._by_key.get(entry.key)
            if texts is not None:
                texts.discard(text)
                if not texts:
                    del self._by_key[entry.key]

    def get(self, text: str) -> CachedToken | None:
        """The entry for the presented ``text`` if fresh and the listener is live."""
        now = self._clock()
        if now - self._heard_at > self.max_age_s:
            return None
        entry = self._entries.get(text)
        if entry is None:
            return None
        if now - entry.stored_at > self.max_age_s:
            with self._lock:
                self._forget(text)
            return None
        return entry

    def put(
        self, text: str, key: str, principal: Principal, created_at_ms: int | None, version: int
    ) -> None:
        """Remember a valid answer, unless an invalidation arrived since ``version``."""
        with self._lock:
            if version != self._version or not self.live:
                return
            self._forget(text)
            self._entries[text] = CachedToken(key, principal, created_at_ms, self._clock())
            self._by_key.setdefault(key, set()).add(text)
            while len(self._entries) > self.max_entries:
                oldest = next(iter(self._entries))
                self._forget(oldest)

    def handle(self, payload: bytes) -> None:
        """Apply one invalidation message (the listener calls this; tests may too)."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.clear()
            return
        with self._lock:
            self._heard_at = self._clock()
            generation = message.get("g")
            if generation != self._generation or message.get("e"):
                self._generation = generation
                self._drop_all()
                return
            keys = message.get("h") or ()
            if keys:
                for key in keys:
                    for text in list(self._by_key.get(key, ())):
                        self._forget(text)
                self._version += 1

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                backoff = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self.handle(message["data"])
            except redis.RedisError as e:
                log.warning("near_cache_disconnected", error=str(e))
            finally:
                with self._lock:  # anything may have changed while we did not listen
                    self._heard_at = float("-inf")
                    self._drop_all()
                pubsub.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)
