"""Token usage without a write per request: validators remember, in memory, when each token
was last used and flush the newest times to the region's Redis in batches.

The region worker forwards them to the usage topic, signed with the keyring exactly
as the token stream is (key id and HMAC in the headers), and the token store
verifies and applies them to ``last_used_at`` (``producer.usage``), so "when was
this token last used" is answered within about a minute with no database write on
the request path. This module owns the usage report's wire form.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import redis

from shared.errors import EventDecodeError
from shared.events import Keyring
from shared.keys import RedisKeys
from shared.logs import get_logger
from shared.outcomes import Outcome

if TYPE_CHECKING:
    from shared.outcomes import ValidationResult
    from shared.tokenformat import ParsedToken

__all__ = [
    "CLIENT",
    "DRAIN_SCRIPT",
    "MAX_REPORT_TOKENS",
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

USAGE_SCHEMA_VERSION = 1
MAX_REPORT_TOKENS = 10_000
"""Tokens per usage record (about 300 kB): a busy region sends several records."""
MAX_COUNTED_TOKENS = 2_000
"""Tokens per usage record that carries their counts (at most ~700 kB)."""
MAX_CLIENTS_PER_TOKEN = 8
"""Fingerprints kept per token and report; the rest are counted under ``other``."""
MAX_INVALID_PER_REPORT = 2_000
"""(fingerprint, hash prefix) pairs per record; a busy region sends several records."""
MAX_PENDING_FIELDS = 50_000
"""Distinct counters a validator holds between flushes; beyond it (token stuffing with
ever new tokens), invalid presentations are counted under the hash prefix ``*``."""
HASH_PREFIX_LENGTH = 8
_MAX_CLIENT = 96
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


_CLIENT_TEXT = re.compile(r"^[0-9.:/ a-z_?-]{0,96}$")
_PREFIX_TEXT = re.compile(r"^(?:[0-9a-f]{8}|\*|-)$")


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


def parse_drained(content: list[bytes] | Mapping[bytes, bytes]) -> dict[int, int]:
    """The reply of ``DRAIN_SCRIPT`` (one key) as token id -> newest use (ms)."""
    items = (
        list(content.items())
        if isinstance(content, Mapping)
        else list(zip(content[::2], content[1::2], strict=True))
    )
    return {int(k): int(v) for k, v in items}


@dataclass(frozen=True)
class TokenUse:
    """One token's presentations in one region and interval, per client fingerprint:
    client -> (valid, forbidden, denied); denied means revoked or expired (after a
    rotation's grace, say)."""

    clients: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def valid(self) -> int:
        """Valid presentations from every client."""
        return sum(c[0] for c in self.clients.values())

    @property
    def forbidden(self) -> int:
        """Presentations that lacked an ability."""
        return sum(c[1] for c in self.clients.values())

    @property
    def denied(self) -> int:
        """Presentations of the token once revoked or expired."""
        return sum(c[2] for c in self.clients.values())

    @property
    def requests(self) -> int:
        """Every presentation of the token."""
        return sum(sum(c) for c in self.clients.values())

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"c": {k: list(v) for k, v in self.clients.items()}}


@dataclass(frozen=True)
class InvalidUse:
    """Invalid presentations (unknown tokens, or ones no id names) from one client
    fingerprint, by the first 8 hex digits of the presented token's hash."""

    client: str
    prefix: str
    count: int


def parse_drained_detail(
    content: Sequence[Any],
) -> tuple[dict[int, int], dict[int, TokenUse], list[InvalidUse]]:
    """The reply of ``DRAIN_SCRIPT`` over (usage, counters): newest use per token id, the
    counts per token, and the invalid presentations. Fields that are not counters (written
    by something else) are dropped."""
    usage = parse_drained(content[0])
    raw: dict[int, dict[str, list[int]]] = {}
    invalid: list[InvalidUse] = []
    pairs = content[1] if len(content) > 1 else []
    for name_b, value_b in zip(pairs[::2], pairs[1::2], strict=True):
        name, count = name_b.decode("utf-8", "replace"), int(value_b)
        if count <= 0:
            continue
        kind = name[:2]
        if kind == "i|":
            client, _, prefix = name[2:].rpartition("|")
            if _CLIENT_TEXT.match(client) and _PREFIX_TEXT.match(prefix):
                invalid.append(InvalidUse(client, prefix, count))
            continue
        parts = name.split("|", 2)
        if kind not in {"v|", "f|", "d|"} or len(parts) != 3 or not parts[1].isdigit():
            continue
        if not _CLIENT_TEXT.match(parts[2]):
            continue
        counts = raw.setdefault(int(parts[1]), {}).setdefault(parts[2], [0, 0, 0])
        counts["vfd".index(kind[0])] += count
    return usage, {k: _token_use(v) for k, v in raw.items()}, invalid


def _token_use(clients: Mapping[str, list[int]]) -> TokenUse:
    """Counts with at most MAX_CLIENTS_PER_TOKEN clients (the busiest; the rest: other)."""
    ranked = sorted(clients.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    kept = {c: (n[0], n[1], n[2]) for c, n in ranked[:MAX_CLIENTS_PER_TOKEN]}
    rest = [n for _, n in ranked[MAX_CLIENTS_PER_TOKEN:]]
    if rest:
        kept["other"] = (sum(n[0] for n in rest), sum(n[1] for n in rest), sum(n[2] for n in rest))
    return TokenUse(kept)


@dataclass(frozen=True)
class UsageReport:
    """One region's batch: token id -> newest use (ms), sent at ``at_ms``; with the
    presentation counts per token and the invalid presentations of the interval."""

    region: str
    at_ms: int
    usage: dict[int, int]
    tokens: Mapping[int, TokenUse] = field(default_factory=dict)
    invalid: Sequence[InvalidUse] = ()

    @property
    def key(self) -> bytes:
        """Kafka key: the region's name."""
        return self.region.encode()

    def to_json(self) -> dict[str, Any]:
        """The wire form (schema version 1; ``tokens`` and ``invalid`` are optional, so a
        store that predates them still applies ``usage``)."""
        body: dict[str, Any] = {
            "v": USAGE_SCHEMA_VERSION,
            "type": "usage",
            "region": self.region,
            "at": self.at_ms,
            "usage": {str(k): v for k, v in self.usage.items()},
        }
        if self.tokens:
            body["tokens"] = {str(k): u.to_json() for k, u in self.tokens.items()}
        if self.invalid:
            body["invalid"] = [[i.client, i.prefix, i.count] for i in self.invalid]
        return body


@dataclass(frozen=True)
class SignedUsageRecord:
    """A usage record as it sits on the topic (what the store's consumer hands over)."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    partition: int = 0
    offset: int = 0


def encode_usage_reports(
    region: str,
    usage: Mapping[int, int],
    at_ms: int,
    keyring: Keyring,
    *,
    tokens: Mapping[int, TokenUse] | None = None,
    invalid: Sequence[InvalidUse] = (),
) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Signed records (key, value, headers) of the interval's usage, at most
    MAX_REPORT_TOKENS tokens (MAX_COUNTED_TOKENS with counts) and MAX_INVALID_PER_REPORT
    invalid entries each."""
    counts = tokens or {}
    ids = sorted(set(usage) | set(counts))
    size = MAX_COUNTED_TOKENS if counts else MAX_REPORT_TOKENS
    token_chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    invalid_chunks = [
        list(invalid[i : i + MAX_INVALID_PER_REPORT])
        for i in range(0, len(invalid), MAX_INVALID_PER_REPORT)
    ]
    for n in range(max(len(token_chunks), len(invalid_chunks))):
        chunk = token_chunks[n] if n < len(token_chunks) else []
        report = UsageReport(
            region,
            at_ms,
            {i: usage[i] for i in chunk if i in usage},
            {i: counts[i] for i in chunk if i in counts},
            invalid_chunks[n] if n < len(invalid_chunks) else (),
        )
        value = orjson.dumps(report.to_json(), option=orjson.OPT_SORT_KEYS)
        yield report.key, value, keyring.sign(report.key, value)


def _whole(value: object, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise EventDecodeError(f"{what} must be a whole number in [{low}, {high}]")
    return value


def _token_id(text: object) -> int:
    if type(text) is not str or not text.isascii() or not text.isdigit() or len(text) > 19:
        raise EventDecodeError("usage token ids must be whole numbers")
    return _whole(int(text), 1, _MAX_TOKEN_ID, "a token id")


def _client(text: object) -> str:
    if type(text) is not str or not _CLIENT_TEXT.match(text):
        raise EventDecodeError("a client fingerprint must be a network and an agent family")
    return text


def _decode_tokens(raw: object) -> dict[int, TokenUse]:
    if raw is None:
        return {}
    if type(raw) is not dict or len(raw) > MAX_REPORT_TOKENS:
        raise EventDecodeError(f"field 'tokens' must map at most {MAX_REPORT_TOKENS} token ids")
    out: dict[int, TokenUse] = {}
    for token_id, entry in raw.items():
        if type(entry) is not dict:
            raise EventDecodeError("a token's counts must be an object")
        clients = entry.get("c", {})
        if type(clients) is not dict or len(clients) > MAX_CLIENTS_PER_TOKEN + 1:
            raise EventDecodeError("a token's clients must map at most 9 fingerprints")
        decoded: dict[str, tuple[int, int, int]] = {}
        for client, counts in clients.items():
            if type(counts) is not list or len(counts) != 3:
                raise EventDecodeError("a client's counts are [valid, forbidden, denied]")
            v, f, d = (_whole(n, 0, _MAX_TOKEN_ID, "a count") for n in counts)
            decoded[_client(client)] = (v, f, d)
        out[_token_id(token_id)] = TokenUse(decoded)
    return out


def _decode_invalid(raw: object) -> list[InvalidUse]:
    if raw is None:
        return []
    if type(raw) is not list or len(raw) > MAX_INVALID_PER_REPORT:
        raise EventDecodeError(
            f"field 'invalid' must list at most {MAX_INVALID_PER_REPORT} entries"
        )
    out: list[InvalidUse] = []
    for entry in raw:
        if type(entry) is not list or len(entry) != 3:
            raise EventDecodeError("an invalid entry is [client, hash prefix, count]")
        prefix = entry[1]
        if type(prefix) is not str or not _PREFIX_TEXT.match(prefix):
            raise EventDecodeError("a hash prefix must be 8 hex digits")
        out.append(
            InvalidUse(_client(entry[0]), prefix, _whole(entry[2], 1, _MAX_TOKEN_ID, "a count"))
        )
    return out


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
        usage[_token_id(token_id)] = _whole(at, 0, _MAX_TOKEN_ID, "a usage time")
    return UsageReport(
        region,
        _whole(data.get("at"), 0, _MAX_TOKEN_ID, "field 'at'"),
        usage,
        _decode_tokens(data.get("tokens")),
        _decode_invalid(data.get("invalid")),
    )
