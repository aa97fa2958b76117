"""Which key vouches for each live record of the token topic, and ``keys reseal``.

``scan`` reads the compacted topic as a region bootstrapping from it would: a record is
vouched for by the first valid seal after it that covers its digest (any key the key
directory does not list as retired), or, while HMAC is configured, by its own MAC.
Per record key the newest vouched record is the one that matters.

``reseal`` publishes again, under the active key, every such record that only an older
key (or only a MAC) vouches for: the copy lands after the original (compaction keeps it,
with its new seal), so the old key can be retired and ``sealed`` workers can bootstrap a
topic written in ``hmac`` mode. A record the relay writes about the same key while the
reseal runs is newer than the copy: it is published again after the copy, so the newest
version is always the last one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.publisher import EventPublisher, OutgoingRecord
from shared.errors import SignatureError
from shared.events import FENCE_HEADER, Keyring
from shared.logs import get_logger
from shared.seal import SealVerifier, is_seal_key, record_digest

__all__ = ["RESEAL_HEADER", "LogRecord", "Scan", "reseal", "scan"]

log = get_logger(__name__)

RESEAL_HEADER = "ts-reseal"
HMAC_VOUCHER = "hmac"
LogRecord = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class Scan:
    """What vouches for the newest vouched record of every key (heartbeats left out)."""

    newest: dict[tuple[int, bytes], tuple[LogRecord, str]] = field(default_factory=dict)
    unvouched: int = 0  # records no accepted seal or MAC vouches for (forged, truncated)
    seals: int = 0

    def by_voucher(self) -> Counter[str]:
        """Live records per key id (``hmac``: only their MAC vouches for them)."""
        return Counter(kid for _, kid in self.newest.values())

    def needing(self, active: str) -> list[LogRecord]:
        """Live records the active key does not vouch for, in topic order."""
        found = [r for r, kid in self.newest.values() if kid != active]
        return sorted(found, key=lambda r: (r[0], r[1]))

    def to_json(self, active: str) -> dict[str, Any]:
        return {
            "live": len(self.newest),
            "by_key": dict(sorted(self.by_voucher().items())),
            "old_key_only": len(self.needing(active)),
            "unvouched": self.unvouched,
            "seals": self.seals,
        }


def _is_heartbeat(key: bytes | None) -> bool:
    return key is not None and key.startswith(b"heartbeat:")


def _digest(record: LogRecord) -> bytes:
    """The record's digest; empty (matched by no seal) when no seal can cover it."""
    try:
        return record_digest(record[2], record[3], record[4])
    except SignatureError:
        return b""  # a header name too long to be sealed


def scan(
    records: Sequence[LogRecord], topic: str, verifier: SealVerifier, hmac: Keyring | None
) -> Scan:
    """Vouchers of ``records`` (a whole topic, in offset order per partition)."""
    result = Scan()
    waiting: dict[int, list[tuple[LogRecord, bytes]]] = {}
    ordered = sorted(records, key=lambda r: (r[0], r[1]))

    def vouch(record: LogRecord, kid: str) -> None:
        partition, offset, key = record[0], record[1], record[2] or b""
        held = result.newest.get((partition, key))
        if (
            held is None
            or held[0][1] < offset
            or (held[0][1] == offset and held[1] == HMAC_VOUCHER)
        ):
            result.newest[(partition, key)] = (record, kid)

    for record in ordered:
        partition, _, key, value, headers = record
        if is_seal_key(key):
            try:
                seal = verifier.verify(key, value, headers, topic, partition)
            except SignatureError:
                continue
            result.seals += 1
            left = []
            for item in waiting.get(partition, []):
                if item[1] in seal.digests:
                    vouch(item[0], seal.kid)
                else:
                    left.append(item)
            waiting[partition] = left
            continue
        if _is_heartbeat(key):
            continue
        if hmac is not None:
            try:
                hmac.verify(key or b"", value or b"", headers)
            except SignatureError:
                pass
            else:
                vouch(record, HMAC_VOUCHER)
        waiting.setdefault(partition, []).append((record, _digest(record)))
    vouched = {(r[0], r[1]) for r, _ in result.newest.values()}
    newest_any: dict[tuple[int, bytes], int] = {}
    for partition, offset, key, _, _ in ordered:
        if not is_seal_key(key) and not _is_heartbeat(key):
            newest_any[(partition, key or b"")] = offset
    result.unvouched = sum(
        1
        for items in waiting.values()
        for r, _ in items
        if (r[0], r[1]) not in vouched and newest_any.get((r[0], r[2] or b"")) == r[1]
    )
    return result


def _copy(record: LogRecord, mark: bytes = b"copy") -> OutgoingRecord:
    """``record`` again, marked: ``copy`` (of what an old key vouched for) or ``newer``
    (of what the relay wrote during the reseal)."""
    partition, _, key, value, headers = record
    # A copy carries no fencing epoch: the original's (an older relay's) would be fenced
    # by the epoch in force where the copy lands; the seal vouches for the copy.
    kept = [(n, v) for n, v in headers if n not in (RESEAL_HEADER, FENCE_HEADER)]
    return OutgoingRecord(key or b"", value or b"", [*kept, (RESEAL_HEADER, mark)], partition)


def reseal(
    read: Callable[[], tuple[list[LogRecord], dict[int, int]]],
    publisher: EventPublisher,
    topic: str,
    verifier: SealVerifier,
    *,
    hmac: Keyring | None,
    active: str,
    chunk: int = 5000,
    rounds: int = 5,
) -> dict[str, Any]:
    """Publish again (``publisher`` seals with ``active``) every live record only an older
    key or a MAC vouches for; then re-publish the relay's newer versions of those keys
    written meanwhile. Returns counts for the report."""
    records, ends = read()
    before = scan(records, topic, verifier, hmac)
    todo = before.needing(active)
    for start in range(0, len(todo), chunk):
        publisher.publish([_copy(r) for r in todo[start : start + chunk]])
    copied = {(r[0], r[2] or b"") for r in todo}
    repeated = 0
    for _ in range(rounds):
        records, _ = read()
        latest: dict[tuple[int, bytes], LogRecord] = {}
        relay_newer: dict[tuple[int, bytes], LogRecord] = {}
        for r in sorted(records, key=lambda r: (r[0], r[1])):
            place = (r[0], r[2] or b"")
            if place not in copied:
                continue
            latest[place] = r
            if r[1] >= ends.get(r[0], 0) and RESEAL_HEADER not in dict(r[4]):
                relay_newer[place] = r
        again = [
            relay_newer[p]
            for p, r in latest.items()
            if p in relay_newer and dict(r[4]).get(RESEAL_HEADER) == b"copy"
        ]
        if not again:
            break
        repeated += len(again)
        publisher.publish([_copy(r, b"newer") for r in sorted(again, key=lambda r: (r[0], r[1]))])
    log.info("resealed", records=len(todo), republished_newer=repeated, key_id=active)
    return {
        "resealed": len(todo),
        "republished_newer": repeated,
        "key_id": active,
        "before": before.to_json(active),
    }
