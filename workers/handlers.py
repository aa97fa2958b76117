"""Plain functions holding the worker's logic: verify and decode a batch, shape it for Redis.

No faust and no Redis here, so every rule is testable with values alone.

Over 350 lines: the hmac path and the sealed path (``SealGate``, which holds records until
a seal covers them) share the record types, the decoding and the dead-letter rules; a
candidate for a split (``SealGate`` into a module of its own) when this module next grows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from shared.errors import EventDecodeError, SignatureError
from shared.events import Keyring, check, fence_of
from shared.keys import RedisKeys, dead_letter_member
from shared.metrics import SEAL_GATE
from shared.seal import RetiredKeyError, SealVerifier, is_seal_key, record_digest
from shared.stages import BatchStages
from workers.fencing import FenceLog

__all__ = [
    "DeadLetter",
    "PreparedBatch",
    "RawRecord",
    "Record",
    "SealGate",
    "denial",
    "prepare_batch",
    "prepare_sealed_batch",
]

# Keys of live tokens outlive their expiry a little, so clocks that differ slightly between
# regions never drop a key a validator still asks for (validators check expiry themselves).
EXPIRY_MARGIN_MS = 60_000
DEFAULT_TOMBSTONE_TTL_MS = 30 * 24 * 3600 * 1000
_HASH = re.compile(r"\A[0-9a-f]{64}\Z")
#: Unsealed records a partition keeps after their dead letter, for a seal read late.
MAX_LATE_PER_PARTITION = 4096


class Record(Protocol):
    """What the worker reads of a consumed record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as consumed: where it was, and its undecoded bytes."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record refused, and why (``signature``, ``decode``, ``fenced``: sent by a relay that
    had lost the lease, see ``workers.fencing``), or applied only as a denial of the token it
    names (``denied``: signed, but not applicable as a grant)."""

    record: Record
    reason: str
    detail: str
    seq: int = -1

    @property
    def applied_as_denial(self) -> bool:
        """Whether the record was applied (as a revocation of its token's hash)."""
        return self.reason == "denied"

    @property
    def withholds_seq(self) -> bool:
        """Whether the region lacks what the record's seq carries (receipts wait): not for a
        denial (applied) nor a fenced record (the lease holder publishes its row again)."""
        return self.reason not in ("denied", "fenced")


@dataclass
class PreparedBatch:
    """A batch ready for one Lua call: the verified events' bytes, offsets, and what was refused.

    Verified token and epoch events travel to Redis as the exact bytes that were signed
    (one JSON array), so nothing is re-encoded on the way.
    """

    keys: list[str] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    heartbeats: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    beats: dict[int, int] = field(default_factory=dict)
    # Where the consumer read each partition from (the worker's own position): the cache
    # refuses a batch that starts past the offset it recorded (it went back in time).
    starts: dict[int, int] = field(default_factory=dict)
    # The topic's partition count as the consumer knows it (0: unknown).
    partition_count: int = 0
    # Heartbeats stamped further ahead of the worker's clock than the skew allowance
    # (partition, stamp): not applied, so that a moment of a wrong store clock cannot pin
    # the region's freshness in the future; their partitions simply get no fresher.
    ahead: list[tuple[int, int]] = field(default_factory=list)
    stages: BatchStages | None = None  # stage stamps (shared.stages), when timing is on

    @property
    def records(self) -> int:
        """Token and epoch events to apply."""
        return len(self.values)

    def script_args(
        self,
        generation: str,
        now_ms: int,
        keys: RedisKeys,
        tombstone_ttl_ms: int = DEFAULT_TOMBSTONE_TTL_MS,
    ) -> list[str | int | bytes]:
        """ARGV for ``apply.lua``."""
        offsets = [
            [p, o, self.beats.get(p, 0), self.starts.get(p, -1)]
            for p, o in sorted(self.next_offsets.items())
        ]
        letters = [
            [dead_letter_member(d.record.partition, d.record.offset), d.seq]
            for d in self.dead_letters
            if d.withholds_seq
        ]
        return [
            generation,
            now_ms,
            keys.invalidations,
            keys.token(""),
            EXPIRY_MARGIN_MS,
            tombstone_ttl_ms,
            b"[" + b",".join(self.values) + b"]",
            orjson.dumps(offsets),
            self.partition_count,
            orjson.dumps(letters),
        ]


def _seq_hint(value: bytes | None) -> int:
    """The ``seq`` a record's JSON names, read without trusting it; -1 if none."""
    if not value:
        return -1
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return -1
    if not isinstance(data, dict) or data.get("type") == "heartbeat":
        return -1  # a heartbeat's seq is what the relay had published, not its own
    seq = data.get("seq")
    return seq if type(seq) is int and seq >= 0 else -1


def denial(record: Record, keyring: Keyring | None) -> bytes | None:
    """A revocation of the token a signed record names, for a record that cannot be applied
    as it is (shape limits, size, unknown op or schema): a revocation never depends on the
    revoked row's payload. None unless the record verifies and names a token hash and seq.
    """
    value = record.value
    if not value:
        return None
    try:
        if keyring is not None:  # None: a seal vouched for the record
            keyring.verify(record.key or b"", value, record.headers or ())
        data: Any = orjson.loads(value)
    except (SignatureError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("type") != "token":
        return None
    token_hash, seq = data.get("hash"), data.get("seq")
    if not isinstance(token_hash, str) or not _HASH.match(token_hash):
        return None
    if type(seq) is not int or seq < 0:
        return None
    return orjson.dumps(
        {"type": "token", "op": "revoked", "hash": token_hash, "seq": seq, "expires_at": None}
    )


def prepare_batch(
    records: Iterable[Record],
    keyring: Keyring,
    keys: RedisKeys,
    *,
    beats_until_ms: int | None = None,
    fences: FenceLog | None = None,
) -> PreparedBatch:
    """Verify and decode ``records``; refused ones become dead letters. Heartbeats stamped
    after ``beats_until_ms`` (the worker's clock plus the skew allowance) are left out
    (``PreparedBatch.ahead``); with ``fences``, a record of an older relay's fencing epoch
    is refused as ``fenced``."""
    batch = PreparedBatch(keys=[keys.meta, keys.partitions, keys.epochs, keys.dead_lettered])
    next_offsets = batch.next_offsets
    chosen = []
    for record in records:
        partition = record.partition
        if record.offset >= next_offsets.get(partition, 0):
            next_offsets[partition] = record.offset + 1
        if not is_seal_key(record.key):  # seals are for workers in sealed mode
            chosen.append(record)
    _decode_into(batch, chosen, keyring, beats_until_ms, fences)
    return batch


def _decode_into(
    batch: PreparedBatch,
    records: Iterable[Record],
    keyring: Keyring | None,
    beats_until_ms: int | None,
    fences: FenceLog | None = None,
) -> None:
    """Verify (with ``keyring``; None: a seal vouched for them) and decode ``records``
    into ``batch``."""
    beats = batch.beats
    values = batch.values
    for record in records:
        partition = record.partition
        try:
            beat = check(record.key, record.value, record.headers, keyring)
            epoch = fence_of(record.headers)
        except SignatureError as e:
            letter = DeadLetter(record, "signature", str(e), _seq_hint(record.value))
            batch.dead_letters.append(letter)
            continue
        except EventDecodeError as e:
            denied = denial(record, keyring)
            if denied is None:
                letter = DeadLetter(record, "decode", str(e), _seq_hint(record.value))
            else:
                values.append(denied)
                letter = DeadLetter(record, "denied", str(e), _seq_hint(record.value))
            batch.dead_letters.append(letter)
            continue
        fenced_by = None if fences is None else fences.admit(partition, record.offset, epoch)
        if fenced_by is not None:
            detail = f"fencing epoch {epoch} is below {fenced_by}, in force in this partition"
            batch.dead_letters.append(DeadLetter(record, "fenced", detail, _seq_hint(record.value)))
            continue
        if beat is None:
            values.append(record.value)  # type: ignore[arg-type]  # check() refused None
        else:
            batch.heartbeats += 1
            if beat.partition != partition:
                continue
            if beats_until_ms is not None and beat.at_ms > beats_until_ms:
                batch.ahead.append((partition, beat.at_ms))
            elif beat.at_ms > beats.get(partition, 0):
                beats[partition] = beat.at_ms


class SealGate:
    """Holds each partition's records until a valid seal covering them was read.

    ``admit`` takes records in offset order and returns the ones a seal (or, in ``both``
    mode, their own HMAC) vouches for, the dead letters (a seal that fails to verify; a
    record no seal covered within ``wait_s`` of being read, reason ``unsealed``), and
    each touched partition's resume offset: the first record still waiting, else past
    the last one read, so a restart reads the waiting records again. An unsealed
    heartbeat is dropped, not dead-lettered: it holds no token state (a topic written in
    hmac mode is full of them), and freshness comes from sealed ones alone. Records a
    later seal covers (a relay that published a batch again) are released by it too;
    digests are matched as a set, so the record's place in the batch does not matter, but
    its partition and topic do (the seal names them).
    """

    def __init__(
        self,
        verifier: SealVerifier,
        topic: str,
        *,
        wait_s: float,
        hmac: Keyring | None = None,
        clock: Callable[[], float] = time.monotonic,
        region: str = "",
    ) -> None:
        self._region = region  # the label of its counters (tokensync_worker_seal_gate)
        self._verifier = verifier
        self._topic = topic
        self._wait_s = wait_s
        self._hmac = hmac
        self._clock = clock
        self._pending: dict[int, list[tuple[Record, bytes, float]]] = {}
        # Records dead-lettered as unsealed, kept (bounded) so that a seal read late (a
        # backlog a topic writer stuffed between records and their seal, a produce retried
        # through a broker fault) still releases them: a late revocation is not lost.
        self._late: dict[int, dict[bytes, Record]] = {}
        self._seen: dict[int, int] = {}
        self.sealed = 0  # seals verified
        self.unsealed = 0  # records dead-lettered for want of a seal
        self.unsealed_heartbeats = 0  # heartbeats no seal covered: dropped, never applied
        self.superseded = 0  # unsealed records a newer sealed one of their key replaced
        self.retired_seals = 0  # seals by a key known as retired: ignored
        self.late = 0  # records a seal released after they were dead-lettered as unsealed

    def _count(self, event: str) -> None:
        """One more of ``event`` (an attribute above), also as a Prometheus counter."""
        setattr(self, event, getattr(self, event) + 1)
        SEAL_GATE.labels(self._region, event).inc()

    def reset(self) -> None:
        """Forget what waits (the consumer was positioned again: it reads it again)."""
        self._pending.clear()
        self._seen.clear()
        self._late.clear()

    def first_waiting_change(self, partition: int) -> float:
        """The offset of the first record of ``partition`` (not a heartbeat) waiting for
        its seal; infinity when none waits."""
        for record, _, _ in self._pending.get(partition, []):
            if not _is_heartbeat(record.key):
                return record.offset
        return float("inf")

    @property
    def waiting(self) -> int:
        """Records read and waiting for a seal."""
        return sum(len(v) for v in self._pending.values())

    def admit(
        self, records: Iterable[Record]
    ) -> tuple[list[Record], list[DeadLetter], dict[int, int]]:
        released: list[Record] = []
        letters: list[DeadLetter] = []
        touched: set[int] = set()
        now = self._clock()
        for record in records:
            partition = record.partition
            touched.add(partition)
            if record.offset + 1 > self._seen.get(partition, 0):
                self._seen[partition] = record.offset + 1
            headers = record.headers or ()
            if is_seal_key(record.key):
                if record.value is None:
                    continue  # a seal's tombstone (keys reseal): it vouches for nothing
                try:
                    seal = self._verifier.verify(
                        record.key, record.value, headers, self._topic, partition
                    )
                except RetiredKeyError:
                    self._count("retired_seals")  # what it covered waits for a current seal
                    continue
                except SignatureError as e:
                    letters.append(DeadLetter(record, "signature", str(e)))
                    continue
                self._count("sealed")
                released += self._release(partition, seal.digests)
            elif self._hmac is not None and _hmac_ok(record, self._hmac):
                released.append(record)
            else:
                try:
                    digest = record_digest(record.key, record.value, headers)
                except SignatureError as e:
                    letters.append(DeadLetter(record, "signature", str(e), _seq_hint(record.value)))
                    continue
                self._pending.setdefault(partition, []).append((record, digest, now))
        letters += self._expire(now, touched)
        resume = {}
        for partition in touched:
            left = self._pending.get(partition)
            resume[partition] = left[0][0].offset if left else self._seen[partition]
        return released, letters, resume

    def _release(self, partition: int, digests: frozenset[bytes]) -> list[Record]:
        """The waiting records of ``partition`` a seal covers; a waiting record of the same
        key, older and of a seq no higher than a released one's, is dropped (superseded: a
        reseal's copy of a record of the hmac era, the original of which no seal covers).
        The seq matters: a genuine old record and its seal replayed by a topic writer must
        not make a newer record (a revocation) that waits for its seal vanish."""
        released: list[Record] = []
        late = self._late.get(partition)
        if late:
            for digest in digests & late.keys():
                released.append(late.pop(digest))
                self._count("late")
        keep = []
        for item in self._pending.get(partition, []):
            if item[1] in digests:
                released.append(item[0])
            else:
                keep.append(item)
        newest: dict[bytes | None, tuple[int, int]] = {}
        for record in released:
            offset, seq = newest.get(record.key, (-1, -1))
            newest[record.key] = (max(offset, record.offset), max(seq, _seq_hint(record.value)))
        left = []
        for item in keep:
            offset, seq = newest.get(item[0].key, (-1, -1))
            waiting_seq = _seq_hint(item[0].value)
            if item[0].offset < offset and 0 <= waiting_seq <= seq:
                self._count("superseded")
            else:
                left.append(item)
        self._pending[partition] = left
        return released

    def _expire(self, now: float, touched: set[int]) -> list[DeadLetter]:
        """Dead letters of the records that waited ``wait_s`` for a seal in vain."""
        letters = []
        for partition, waiting in self._pending.items():
            expired = [item for item in waiting if now - item[2] >= self._wait_s]
            if not expired:
                continue
            touched.add(partition)
            self._pending[partition] = [item for item in waiting if now - item[2] < self._wait_s]
            late = self._late.setdefault(partition, {})
            for record, digest, _ in expired:
                if _is_heartbeat(record.key):
                    self._count("unsealed_heartbeats")
                    continue
                late[digest] = record
                while len(late) > MAX_LATE_PER_PARTITION:
                    del late[next(iter(late))]
                self._count("unsealed")
                detail = f"no valid seal covered it within {self._wait_s:g} s"
                letters.append(DeadLetter(record, "unsealed", detail, _seq_hint(record.value)))
        return letters


def _is_heartbeat(key: bytes | None) -> bool:
    return key is not None and key.startswith(b"heartbeat:")


def _hmac_ok(record: Record, keyring: Keyring) -> bool:
    try:
        keyring.verify(record.key or b"", record.value or b"", record.headers or ())
    except SignatureError:
        return False
    return True


def prepare_sealed_batch(
    records: Iterable[Record],
    gate: SealGate,
    keys: RedisKeys,
    *,
    beats_until_ms: int | None = None,
    fences: FenceLog | None = None,
) -> PreparedBatch:
    """``prepare_batch`` for ``sealed`` and ``both`` modes: only what ``gate`` released is
    decoded (its authenticity is proven already: no per-record MAC is checked); with
    ``fences``, a record of an older relay's fencing epoch is refused as ``fenced``."""
    batch = PreparedBatch(keys=[keys.meta, keys.partitions, keys.epochs, keys.dead_lettered])
    released, letters, resume = gate.admit(records)
    batch.dead_letters.extend(letters)
    batch.next_offsets.update(resume)
    # A heartbeat certifies that what was published before it is applied: one behind a
    # change still waiting for its seal certifies nothing yet.
    released = [
        r
        for r in released
        if not _is_heartbeat(r.key) or r.offset < gate.first_waiting_change(r.partition)
    ]
    _decode_into(batch, released, None, beats_until_ms, fences)
    return batch
