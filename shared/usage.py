"""Token usage without a write per request: validators remember, in memory, when each token
was last used and flush the newest times to the region's Redis in batches.

The region worker forwards them to the usage topic, and the token store applies
them to ``last_used_at`` (``producer.usage``), so "when was this token last
used" is answered within about a minute with no database write on the request path.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import redis

from shared.keys import RedisKeys
from shared.logs import get_logger

__all__ = ["DRAIN_SCRIPT", "UsageRecorder", "parse_drained"]

log = get_logger(__name__)

# KEYS[1] usage hash; ARGV: id, ms, id, ms, ... -> keep the newest time per token id.
_MERGE_SCRIPT = """
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return #ARGV / 2
"""

# KEYS[1] usage hash -> its content, and the hash is gone (one atomic take).
DRAIN_SCRIPT = """
local content = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return content
"""


class UsageRecorder:
    """Newest use per token id, flushed every ``interval_s`` by a background thread."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, interval_s: float = 15.0) -> None:
        self._client = client
        self._keys = keys
        self.interval_s = interval_s
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._merge = client.register_script(_MERGE_SCRIPT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, token_id: int | None, at_ms: int) -> None:
        """Note one use (a dict write; nothing leaves the process here)."""
        if token_id is None:
            return
        key = str(token_id)
        if self._pending.get(key, 0) < at_ms:
            self._pending[key] = at_ms

    def flush(self) -> int:
        """Merge what was recorded into the region's usage hash; return how many tokens."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        args: list[str | int] = []
        for token_id, at in pending.items():
            args += [token_id, at]
        try:
            self._merge(keys=[self._keys.usage], args=args)
        except redis.RedisError as e:
            log.warning("usage_flush_failed", tokens=len(pending), error=str(e))
            with self._lock:  # keep them for the next round
                for token_id, at in pending.items():
                    if self._pending.get(token_id, 0) < at:
                        self._pending[token_id] = at
            return 0
        return len(pending)

    def start(self) -> UsageRecorder:
        """Flush every ``interval_s`` in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tokensync-usage", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Flush what is left and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()


def parse_drained(content: list[bytes] | Mapping[bytes, bytes]) -> dict[int, int]:
    """The reply of ``DRAIN_SCRIPT`` as token id -> newest use (ms)."""
    items = (
        list(content.items())
        if isinstance(content, Mapping)
        else list(zip(content[::2], content[1::2], strict=True))
    )
    return {int(k): int(v) for k, v in items}
