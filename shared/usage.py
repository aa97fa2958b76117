"""Token usage without a write per request: validators remember, in memory, when each token
was last used and flush the newest times to the region's Redis in batches.

The region worker forwards them to the usage topic, signed with the keyring exactly
as the token stream is (key id and HMAC in the headers), and the token store
verifies and applies them to ``last_used_at`` (``producer.usage``), so "when was
this token last used" is answered within about a minute with no database write on
the request path. This module owns the usage report's wire form.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from shared.errors import EventDecodeError
from shared.events import Keyring
from shared.keys import RedisKeys
from shared.logs import get_logger

__all__ = [
    "DRAIN_SCRIPT",
    "MAX_REPORT_TOKENS",
    "SignedUsageRecord",
    "UsageRecorder",
    "UsageReport",
    "decode_usage_report",
    "encode_usage_reports",
    "parse_drained",
]

USAGE_SCHEMA_VERSION = 1
MAX_REPORT_TOKENS = 10_000
"""Tokens per usage record (about 300 kB): a busy region sends several records."""
_MAX_REPORT_BYTES = 1 << 20
_MAX_TOKEN_ID = (1 << 63) - 1

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


@dataclass(frozen=True)
class UsageReport:
    """One region's batch: token id -> newest use (ms), sent at ``at_ms``."""

    region: str
    at_ms: int
    usage: dict[int, int]

    @property
    def key(self) -> bytes:
        """Kafka key: the region's name."""
        return self.region.encode()

    def to_json(self) -> dict[str, Any]:
        """The wire form (schema version 1)."""
        return {
            "v": USAGE_SCHEMA_VERSION,
            "type": "usage",
            "region": self.region,
            "at": self.at_ms,
            "usage": {str(k): v for k, v in self.usage.items()},
        }


@dataclass(frozen=True)
class SignedUsageRecord:
    """A usage record as it sits on the topic (what the store's consumer hands over)."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    partition: int = 0
    offset: int = 0


def encode_usage_reports(
    region: str, usage: Mapping[int, int], at_ms: int, keyring: Keyring
) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Signed records (key, value, headers) of ``usage``, at most MAX_REPORT_TOKENS each."""
    items = sorted(usage.items())
    for start in range(0, len(items), MAX_REPORT_TOKENS):
        report = UsageReport(region, at_ms, dict(items[start : start + MAX_REPORT_TOKENS]))
        value = orjson.dumps(report.to_json(), option=orjson.OPT_SORT_KEYS)
        yield report.key, value, keyring.sign(report.key, value)


def _whole(value: object, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise EventDecodeError(f"{what} must be a whole number in [{low}, {high}]")
    return value


def decode_usage_report(record: SignedUsageRecord, keyring: Keyring) -> UsageReport:
    """Verify and decode one usage record; SignatureError when it is not signed by a key
    of the keyring, EventDecodeError when it is not a well-formed report."""
    value = record.value
    if not value:
        raise EventDecodeError("usage record has no value")
    if len(value) > _MAX_REPORT_BYTES:
        raise EventDecodeError(f"usage record of {len(value)} bytes exceeds {_MAX_REPORT_BYTES}")
    keyring.verify(record.key or b"", value, record.headers)
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise EventDecodeError("usage record is not JSON") from e
    if type(data) is not dict or data.get("type") != "usage":
        raise EventDecodeError("usage record is not a usage report")
    if data.get("v") != USAGE_SCHEMA_VERSION:
        raise EventDecodeError(f"unknown usage schema version {str(data.get('v'))[:16]!r}")
    region, raw = data.get("region"), data.get("usage")
    if type(region) is not str or not 0 < len(region) <= 64:
        raise EventDecodeError("field 'region' must be a name of 1 to 64 characters")
    if record.key is not None and record.key != region.encode():
        raise EventDecodeError("usage record key does not match its region")
    if type(raw) is not dict or len(raw) > MAX_REPORT_TOKENS:
        raise EventDecodeError(f"field 'usage' must map at most {MAX_REPORT_TOKENS} token ids")
    usage: dict[int, int] = {}
    for token_id, at in raw.items():
        if not token_id.isascii() or not token_id.isdigit() or len(token_id) > 19:
            raise EventDecodeError("usage token ids must be whole numbers")
        usage[_whole(int(token_id), 1, _MAX_TOKEN_ID, "a token id")] = _whole(
            at, 0, _MAX_TOKEN_ID, "a usage time"
        )
    return UsageReport(region, _whole(data.get("at"), 0, _MAX_TOKEN_ID, "field 'at'"), usage)
