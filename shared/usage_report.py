"""The usage report's wire form: what a region's worker drains from its Redis
(``parse_drained_detail``), signs and sends (``encode_usage_reports``), and what the
token store verifies and decodes (``decode_usage_report``): per token the newest use and
the presentations per client fingerprint, and the invalid presentations by hash prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import EventDecodeError
from shared.events import Keyring
from shared.region_keys import RegionKeys, Signer

__all__ = [
    "MAX_CLIENTS_PER_TOKEN",
    "MAX_COUNTED_TOKENS",
    "MAX_INVALID_PER_REPORT",
    "MAX_REPORT_TOKENS",
    "USAGE_SCHEMA_VERSION",
    "InvalidUse",
    "SignedUsageRecord",
    "TokenUse",
    "UsageReport",
    "decode_usage_report",
    "encode_usage_reports",
    "parse_drained",
    "parse_drained_detail",
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
_MAX_REPORT_BYTES = 1 << 20
_MAX_TOKEN_ID = (1 << 63) - 1

# A client fingerprint ("198.51.100.0/24 curl", "" unknown, "?" not one) and a hash prefix
_CLIENT_TEXT = re.compile(r"^[0-9.:/ a-z_?-]{0,96}$")
_PREFIX_TEXT = re.compile(r"^(?:[0-9a-f]{8}|\*|-)$")


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
    keyring: Signer,
    *,
    tokens: Mapping[int, TokenUse] | None = None,
    invalid: Sequence[InvalidUse] = (),
) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Signed records (key, value, headers) of the interval's usage, at most
    MAX_REPORT_TOKENS tokens (MAX_COUNTED_TOKENS with counts) and MAX_INVALID_PER_REPORT
    invalid entries each, signed by ``keyring`` (the region's own key once it has one,
    ``shared.region_keys``)."""
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


def decode_usage_report(record: SignedUsageRecord, keyring: Keyring | RegionKeys) -> UsageReport:
    """Verify and decode one usage record; SignatureError when it is not signed by a key
    of the keyring (or a region key), EventDecodeError when it is not a well-formed report."""
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
