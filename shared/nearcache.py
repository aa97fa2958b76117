"""An in-process cache of valid answers, invalidated by the region's apply stream.

Every batch a worker applies is announced on the region's invalidation channel
(what tokens changed, whether an epoch moved, the cache generation); a
listener thread drops what changed (everything on an epoch or a new generation).

What the cache may answer is *certified*, never assumed: a pinger thread
publishes, from a script inside Redis, a ping carrying Redis's time and the
region's state (oldest heartbeat, ready, generation) on a channel of its own
that the listener's connection also subscribes (Redis delivers one
connection's messages in publish order, across channels). When the listener
reads its own ping back, every invalidation published before it has been processed,
so the cache is known to hold nothing older than that ping. The cache answers
only while its newest processed ping was *sent* less than ``bound_s`` ago and
only while the region itself, judged by that ping's heartbeat, may answer
*valid* (``shared.rules``); apply messages, empty or not, never keep it alive.
Each near-cache registers for receipts (``shared.nearcache_registry``).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from shared.errors import ConfigError
from shared.keys import InvalidationField, PingField, PingKind, RedisKeys
from shared.logs import get_logger
from shared.nearcache_registry import (
    FORGET_AFTER_MS,
    PING_SCRIPT,
    near_caches_behind,
    redis_time_ms,
    registration,
    report,
    sync_near_caches,
)
from shared.outcomes import Principal
from shared.rules import Freshness, TokenRecord, answerable_window

__all__ = [
    "CachedToken",
    "NearCache",
    "near_caches_behind",
    "redis_time_ms",
    "sync_near_caches",
]

log = get_logger(__name__)

_ANSWER_MARGIN_S = FORGET_AFTER_MS / 3000
_REPORT_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class CachedToken:
    """What a later call needs to answer without Redis (keyed by the presented text)."""

    key: str
    record: TokenRecord

    @property
    def principal(self) -> Principal:
        """Who the token belongs to."""
        return self.record.principal


@dataclass(frozen=True, slots=True)
class _Certificate:
    """The newest own ping the listener processed: when it was sent (monotonic), the
    region's oldest heartbeat it carried, and from that the validator clock readings at
    which the region itself may answer (``shared.rules.answerable_window``)."""

    sent: float
    until: float
    heartbeat_ms: int
    window: tuple[int, int] | None


class NearCache:
    """Presented token -> principal, answered only while certified; thread-safe.

    Keyed by the exact text a client presented (so a hit costs no hashing or parsing);
    an index from the token's Redis key finds the entries an invalidation names.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        *,
        freshness: Freshness | None = None,
        bound_s: float = 0.25,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < bound_s <= 60:
            raise ConfigError(f"a near-cache bound of {bound_s!r} s is not between 0 and 60")
        self._client = client
        self._keys = keys
        self.freshness = freshness or Freshness()
        self.bound_s = bound_s
        self.ping_interval_s = bound_s / 5
        self.max_entries = max_entries
        self.id = uuid.uuid4().hex
        self._clock = clock
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._generation: str | None = None
        self._certificate: _Certificate | None = None
        self._pending: OrderedDict[int, float] = OrderedDict()
        self._numbers = itertools.count(1)
        self._reported_t = -1
        self._own_reported_at = float("-inf")
        # monotonic send time of the newest own ping whose Redis time (or a later one) the
        # registration holds: certificates never outlive it by more than bound + margin
        self._anchor = float("-inf")
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ping = client.register_script(PING_SCRIPT)
        self._own_channel = f"{keys.invalidations}:{self.id}"

    @property
    def _bound_ms(self) -> int:
        return int(self.bound_s * 1000)

    @property
    def version(self) -> int:
        """Bumped by every invalidation; read before a lookup, passed to ``put``."""
        return self._version

    @property
    def live(self) -> bool:
        """Whether the cache may answer now (certified recently, region fresh)."""
        return self._usable(int(time.time() * 1000))

    def _usable(self, now_ms: int) -> bool:
        cert = self._certificate
        if cert is None or cert.window is None or self._clock() > cert.until:
            return False
        return cert.window[0] <= now_ms <= cert.window[1]

    def freshness_s(self, now_ms: int) -> float | None:
        """Age of the region's oldest heartbeat as the newest certificate saw it."""
        cert = self._certificate
        if cert is None or cert.heartbeat_ms < 0:
            return None
        return max(0.0, (now_ms - cert.heartbeat_ms) / 1000)

    def start(self) -> NearCache:
        """Start the listener and pinger threads (idempotent)."""
        if not self._threads:
            for target, name in ((self._listen, "listen"), (self._pinger, "ping")):
                thread = threading.Thread(
                    target=target, name=f"tokensync-nearcache-{name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening, unregister and forget everything."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):  # else receipts forget it in time
            self._client.hdel(self._keys.near_caches, self.id)
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

    def get(self, text: str, now_ms: int) -> CachedToken | None:
        """The entry for the presented ``text``, if the cache may answer at ``now_ms``."""
        if not self._usable(now_ms):
            return None
        return self._entries.get(text)

    def put(
        self,
        text: str,
        key: str,
        principal: Principal,
        created_at_ms: int | None,
        *,
        version: int,
        now_ms: int,
    ) -> None:
        """Remember a valid answer, unless an invalidation arrived since ``version``."""
        with self._lock:
            if version != self._version or not self._usable(now_ms):
                return
            self._forget(text)
            record = TokenRecord(principal, created_at_ms, None)  # epochs clear the cache
            self._entries[text] = CachedToken(key, record)
            self._by_key.setdefault(key, set()).add(text)
            while len(self._entries) > self.max_entries:
                self._forget(next(iter(self._entries)))

    def handle(self, payload: bytes) -> None:
        """Apply one channel message (the listener calls this; tests may too)."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self.clear()
            return
        kind = message.get(PingField.KIND)
        if kind == PingKind.PING:
            if message.get(PingField.ID) == self.id:
                self._own_ping(message)
            return
        if kind == PingKind.SYNC:
            self._report(int(message.get(PingField.TIME, 0)))
            return
        if kind is not None:
            return  # a kind this version does not know: not an invalidation
        with self._lock:
            generation = message.get(InvalidationField.GENERATION)
            if generation != self._generation or message.get(InvalidationField.EPOCH_MOVED):
                self._generation = generation
                self._drop_all()
                return
            keys = message.get(InvalidationField.TOKEN_KEYS) or ()
            if keys:
                for key in keys:
                    for text in list(self._by_key.get(key, ())):
                        self._forget(text)
                self._version += 1

    def _own_ping(self, message: dict[str, Any]) -> None:
        with self._lock:
            sent = self._pending.pop(int(message.get(PingField.NUMBER, 0)), None)
            generation = message.get(PingField.GENERATION) or None
            if generation != self._generation:
                self._generation = generation
                self._drop_all()
        if sent is None:
            return
        processed_t = int(message.get(PingField.TIME, 0))
        if self._clock() - self._own_reported_at >= _REPORT_EVERY_S:
            self._report(processed_t)
            self._own_reported_at = self._clock()
        if processed_t <= self._reported_t:  # receipts know we got this far
            self._anchor = max(self._anchor, sent)
        # Receipts forget us once our last report is older than bound + FORGET_AFTER_MS;
        # never answer that long after the newest ping they know we processed.
        until = min(sent, self._anchor + _ANSWER_MARGIN_S) + self.bound_s
        if until <= self._clock():
            return
        heartbeat = int(message.get(PingField.OLDEST_HEARTBEAT, -1))
        ready = bool(message.get(PingField.READY))
        window = answerable_window(ready, heartbeat, self.freshness)
        cert = _Certificate(sent, until, heartbeat, window)
        with self._lock:
            if self._certificate is None or cert.sent > self._certificate.sent:
                self._certificate = cert

    def _report(self, processed_t: int) -> None:
        """Tell receipts what this cache has processed (a Redis write on this thread; a
        failure ends the subscription like a disconnect)."""
        if processed_t <= self._reported_t:
            return
        self._client.hset(self._keys.near_caches, self.id, report(processed_t, self._bound_ms))
        self._reported_t = processed_t

    def _register(self) -> None:
        """Before any answer: receipts must know this cache exists."""
        asked = self._clock()
        now_ms = redis_time_ms(self._client)
        self._client.hset(self._keys.near_caches, self.id, registration(now_ms, self._bound_ms))
        self._reported_t = 0
        self._anchor = max(self._anchor, asked)

    def _pinger(self) -> None:
        while not self._stop.wait(self.ping_interval_s):
            if not self._subscribed.is_set():
                continue
            number = next(self._numbers)
            with self._lock:
                self._pending[number] = self._clock()
                while len(self._pending) > 64:
                    self._pending.popitem(last=False)
            try:
                self._ping(
                    keys=[self._keys.meta, self._keys.epochs, self._keys.partitions],
                    args=[self._own_channel, PingKind.PING, self.id, number],
                )
            except redis.RedisError as e:
                log.warning("near_cache_ping_failed", error=str(e))

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                # One connection, two channels: Redis delivers in publish order across
                # channels, and only this cache hears its own pings.
                pubsub.subscribe(self._keys.invalidations, self._own_channel)
                self._register()
                self._subscribed.set()
                backoff = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.1)
                    if message is not None and message.get("type") == "message":
                        self.handle(message["data"])
            except redis.RedisError as e:
                log.warning("near_cache_disconnected", error=str(e))
            finally:
                self._subscribed.clear()
                with self._lock:  # anything may have changed while we did not listen
                    self._certificate = None
                    self._pending.clear()
                    self._drop_all()
                pubsub.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)
