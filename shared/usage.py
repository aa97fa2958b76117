"""Token usage without a write per request: validators remember, in memory, when each token
was last used and flush the newest times to the region's Redis in batches.

The region worker forwards them to the usage topic, signed with the keyring exactly
as the token stream is (key id and HMAC in the headers), and the token store
verifies and applies them to ``last_used_at`` (``producer.usage``), so "when was
this token last used" is answered within about a minute with no database write on
the request path. Beside the newest use, validators count per token and interval its
valid, forbidden and denied (revoked or expired) presentations per coarse client
fingerprint (``client_fingerprint``: IP /24 or /48 and user-agent family, set in
``CLIENT`` by the middleware or the gate), and invalid presentations per fingerprint
with an 8-hex prefix of the presented token's hash only; the store keeps them in its
usage window, where its detectors read them (``producer.detectors``).

This module owns what validators record and its Redis side; the report's wire form is
``shared.usage_report`` (its names are re-exported here).
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

import redis

from shared.keys import RedisKeys
from shared.logs import get_logger
from shared.outcomes import Outcome
from shared.usage_report import (
    _CLIENT_TEXT,
    MAX_CLIENTS_PER_TOKEN,
    MAX_COUNTED_TOKENS,
    MAX_INVALID_PER_REPORT,
    MAX_REPORT_TOKENS,
    USAGE_SCHEMA_VERSION,
    InvalidUse,
    SignedUsageRecord,
    TokenUse,
    UsageReport,
    decode_usage_report,
    encode_usage_reports,
    parse_drained,
    parse_drained_detail,
)

if TYPE_CHECKING:
    from shared.outcomes import ValidationResult
    from shared.tokenformat import ParsedToken

__all__ = [
    "CLIENT",
    "DRAIN_SCRIPT",
    "HASH_PREFIX_LENGTH",
    "MAX_CLIENTS_PER_TOKEN",
    "MAX_COUNTED_TOKENS",
    "MAX_INVALID_PER_REPORT",
    "MAX_PENDING_FIELDS",
    "MAX_REPORT_TOKENS",
    "USAGE_SCHEMA_VERSION",
    "InvalidUse",
    "SignedUsageRecord",
    "TokenUse",
    "UsageRecorder",
    "UsageReport",
    "client_fingerprint",
    "decode_usage_report",
    "encode_usage_reports",
    "parse_drained",
    "parse_drained_detail",
    "proxied_client",
]

MAX_PENDING_FIELDS = 50_000
"""Distinct counters a validator holds between flushes; beyond it (token stuffing with
ever new tokens), invalid presentations are counted under the hash prefix ``*``."""
HASH_PREFIX_LENGTH = 8

log = get_logger(__name__)

# KEYS[1] usage hash, KEYS[2] counter hash; ARGV[1] = n, then n (id, ms) pairs, then
# (field, increment) pairs -> the newest time per token id, counters summed.
_MERGE_DETAIL_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
for i = 2 * n + 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
return n
"""

# KEYS -> the content of each hash, and the hashes are gone (one atomic take). With one
# key the reply is that hash's content (what workers before the counters expect).
DRAIN_SCRIPT = """
if #KEYS == 1 then
  local content = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  return content
end
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
  redis.call('DEL', KEYS[i])
end
return out
"""

CLIENT: ContextVar[str] = ContextVar("tokensync_client", default="")
"""The coarse fingerprint of the client of the request being validated ("" unknown): the
ASGI middleware and the gate set it around ``validate``; the usage recorder reads it."""
_CLIENT_GET = CLIENT.get
_VALID, _FORBIDDEN, _INVALID = Outcome.VALID, Outcome.FORBIDDEN, Outcome.INVALID
_DENIED_REASONS = frozenset({"revoked", "expired"})

_UA_FAMILIES = (
    ("edg/", "edge"),
    ("opr/", "opera"),
    ("firefox/", "firefox"),
    ("chrome/", "chrome"),
    ("safari/", "safari"),
    ("curl/", "curl"),
    ("wget/", "wget"),
    ("python-requests", "python-requests"),
    ("python-httpx", "python-httpx"),
    ("aiohttp", "aiohttp"),
    ("python-urllib", "python-urllib"),
    ("go-http-client", "go"),
    ("okhttp", "okhttp"),
    ("java/", "java"),
    ("guzzlehttp", "guzzle"),
    ("axios", "axios"),
    ("node-fetch", "node"),
    ("undici", "node"),
    ("postmanruntime", "postman"),
    ("bot", "bot"),
    ("spider", "bot"),
)


def _ua_family(user_agent: str | None) -> str:
    if not user_agent:
        return "none"
    lowered = user_agent[:512].lower()
    for needle, family in _UA_FAMILIES:
        if needle in lowered:
            return family
    return "other"


@functools.lru_cache(maxsize=4096)
def client_fingerprint(ip: str | None, user_agent: str | None) -> str:
    """A coarse client fingerprint: the IPv4 /24 or IPv6 /48 and the user-agent family,
    e.g. ``198.51.100.0/24 curl`` (never the full address, never the agent string)."""
    network = "-"
    if ip:
        try:
            address = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            network = "-"
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            prefix = 24 if address.version == 4 else 48
            network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return f"{network} {_ua_family(user_agent)}"


def proxied_client(headers: Mapping[str, str]) -> str:
    """The fingerprint of the client behind a proxy (the gate's case; header names in
    lower case): ``X-Real-IP``, else the last hop of ``X-Forwarded-For`` (the one the
    proxy itself appended), and ``User-Agent``."""
    ip = headers.get("x-real-ip")
    if not ip:
        ip = headers.get("x-forwarded-for", "").rsplit(",", 1)[-1].strip() or None
    return client_fingerprint(ip, headers.get("user-agent"))


class UsageRecorder:
    """Newest use and presentation counts per token id (and invalid presentations per
    client fingerprint), flushed every ``interval_s`` by a background thread."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, interval_s: float = 15.0) -> None:
        self._client = client
        self._keys = keys
        self.interval_s = interval_s
        self._pending: dict[int, int] = {}
        # (kind, token id or client, client or hash prefix) -> count; kind v|f|d|i
        self._counts: dict[tuple[str, int | str, str], int] = {}
        self._lock = threading.Lock()
        self._merge = client.register_script(_MERGE_DETAIL_SCRIPT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, token_id: int | None, at_ms: int) -> None:
        """Note one use (a dict write; nothing leaves the process here)."""
        if token_id is None:
            return
        pending = self._pending
        if pending.get(token_id, 0) < at_ms:
            pending[token_id] = at_ms

    def observe(self, result: ValidationResult, at_ms: int, parsed: ParsedToken | None) -> None:
        """Note one validation's outcome (two dict writes at most): valid and forbidden per
        token and client, revoked or expired presentations of a known token id as
        *denied*, and every other invalid one per client and hash prefix. *Unavailable* is
        not usage."""
        outcome = result.outcome
        key: tuple[str, int | str, str]
        if outcome is _VALID:
            principal = result.principal
            token_id = principal.token_id if principal is not None else None
            if token_id is None:
                return
            pending = self._pending
            if pending.get(token_id, 0) < at_ms:
                pending[token_id] = at_ms
            key = ("v", token_id, _CLIENT_GET())
        elif outcome is _FORBIDDEN:
            principal = result.principal
            if principal is None or principal.token_id is None:
                return
            key = ("f", principal.token_id, _CLIENT_GET())
        elif outcome is _INVALID:
            if (
                parsed is not None
                and parsed.token_id is not None
                and result.reason in _DENIED_REASONS
            ):
                key = ("d", parsed.token_id, _CLIENT_GET())
            else:
                prefix = parsed.token_hash[:HASH_PREFIX_LENGTH] if parsed is not None else "-"
                if len(self._counts) >= MAX_PENDING_FIELDS:
                    prefix = "*"
                key = ("i", _CLIENT_GET(), prefix)
        else:
            return
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def flush(self) -> int:
        """Merge what was recorded into the region's usage hashes; return how many tokens."""
        with self._lock:
            pending, self._pending = self._pending, {}
            counts, self._counts = self._counts, {}
        if not pending and not counts:
            return 0
        args: list[str | int] = [len(pending)]
        for token_id, at in pending.items():
            args += [str(token_id), at]
        for (kind, first, second), count in counts.items():
            args += [_clean_field(f"{kind}|{first}|{second}"), count]
        try:
            self._merge(keys=[self._keys.usage, self._keys.usage_counts], args=args)
        except redis.RedisError as e:
            log.warning("usage_flush_failed", tokens=len(pending), error=str(e))
            with self._lock:  # keep them for the next round
                for token_id, at in pending.items():
                    if self._pending.get(token_id, 0) < at:
                        self._pending[token_id] = at
                for name, count in counts.items():
                    self._counts[name] = self._counts.get(name, 0) + count
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


def _clean_field(name: str) -> str:
    """A counter field whose client text is not a fingerprint (an app set ``CLIENT`` to
    something else) keeps its counts under the client ``?``."""
    if name[0] == "i":
        client, prefix = name[2:].rsplit("|", 1)
        return name if _CLIENT_TEXT.match(client) else f"i|?|{prefix}"
    kind, token_id, client = name.split("|", 2)
    return name if _CLIENT_TEXT.match(client) else f"{kind}|{token_id}|?"
