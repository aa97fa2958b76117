"""The relay: publishes outbox rows to Kafka in seq order, then marks them published.

A row is marked only after the broker acknowledged it (acks=all), so a crash
between the two replays it (a duplicate, which regions absorb), never loses it.
Heartbeats go into every partition at least every ``heartbeat_interval_s``, stamped
with the store's clock held back by the oldest unpublished row (``certified_ms``):
a heartbeat stamped T certifies that every change committed before T was published,
so a region never looks fresher than what it holds, during a backlog or a backfill.
While Kafka is down the outbox grows and the relay retries with backoff; every second it
sets the ``tokensync_relay_backlog_records`` gauge to the outbox rows not yet published.
Every second the relay checks that the outbox triggers are in place; while one is
missing it logs ``store_triggers_missing`` and certifies nothing newer than the last
check that found them (``tokensync store repair`` reinstalls them).

With a lease (``producer.relay_lease``) several relays may run: only the holder
publishes, stamping its fencing epoch into every record and heartbeat; it re-checks the
lease before each produce (unless its last renewal is younger than a third of the TTL, see
``producer.relay_failover``) and renews it in the transaction that marks rows published, so
a relay that lost it stops at once, marks nothing, drops its producer and becomes a
standby (``relay_standby``); a standby polls and takes an expired lease (``relay_active``).
Each batch's read and mark run on store connections the relay holds open
(``producer.relay_store``).

Over 350 lines: the relay loop is one concept (read, sign, publish, mark, heartbeat,
certify); Kafka I/O (``kafka_io``), outbox encoding (``outbox``), commit wake-ups
(``wakeup``), the held store connections (``relay_store``), the backlog gauge
(``relay_backlog``), the lease and failover
(``relay_lease``, ``relay_failover``) and late records (``late_records``) are split out.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from producer.backfill import pending_since_ms
from producer.clock import db_now_ms
from producer.late_records import republish_newest_or_pending
from producer.outbox import (
    BadRowError,
    Encoded,
    Published,
    deny,
    encode_row,
    fetch_unpublished,
    mark_published,
    oldest_unpublished_ms,
)
from producer.publisher import EventPublisher, OutgoingRecord, Placement, RecordTooLargeError
from producer.relay_backlog import count_backlog, count_backlog_until
from producer.relay_failover import Failover, Step, since_boot
from producer.relay_lease import LeaseLostError, RelayLease
from producer.relay_store import HeldConnections
from producer.store_zone import zone_of
from producer.trigger_check import missing_triggers
from producer.wakeup import OutboxWaker
from shared import tracing
from shared.errors import PublishError, StoreError
from shared.events import EpochEvent, Heartbeat, Keyring, encode
from shared.logs import get_logger
from shared.metrics import (
    RELAY_DENIED,
    RELAY_LATENCY,
    RELAY_PUBLISHED,
    RELAY_QUARANTINED,
    RELAY_TRIGGERS_MISSING,
)

__all__ = ["Relay", "RelayOptions", "partition_for"]

log = get_logger(__name__)

#: how long a stale relay waits for the holder to mark a newest row it has in flight
LATE_WAIT_S = 5.0


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a record key: CRC-32 (C speed; kafka-python's murmur2 is pure Python).
    Every record about one token or scope lands in one partition, so its order holds."""
    return zlib.crc32(key) % partitions


@dataclass(frozen=True)
class RelayOptions:
    """Tuning of the relay loop."""

    batch_size: int = 5000
    heartbeat_interval_s: float = 0.5
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    trigger_check_interval_s: float = 1.0
    backlog_interval_s: float = 1.0
    lease_renew_interval_s: float = 1.0  # the holder renews (the lease's TTL is ~3x this)
    lease_poll_interval_s: float = 0.25  # a standby looks for an expired lease


class Relay:
    """Moves outbox rows to the token topic; one instance per process."""

    def __init__(
        self,
        engine: sa.Engine,
        connect: Callable[[], EventPublisher],
        keyring: Keyring,
        waker: OutboxWaker,
        *,
        options: RelayOptions = RelayOptions(),
        clock: Callable[[], float] = time.time,
        lease: RelayLease | None = None,
        monotonic: Callable[[], float] = since_boot,
    ) -> None:
        self._engine = engine
        # without a lease: the only relay (no fencing epoch), as before
        self._failover = Failover(lease, clock, options.lease_renew_interval_s, monotonic)
        self._store = HeldConnections(engine)  # each batch's read and mark
        self._zone = zone_of(engine.dialect)  # of the table's naive timestamps
        self._connect = connect
        self._keyring = keyring
        self._waker = waker
        self._options = options
        self._clock = clock
        self._publisher: EventPublisher | None = None
        self._last_heartbeat = 0.0
        self._last_seq = 0
        self._epoch_published = False  # a heartbeat follows at once (receipts of epochs)
        self._triggers_checked = -float("inf")
        self._triggers_ok_ms: int | None = None  # store clock when last seen in place
        self._blind_since_ms: int | None = None  # set while triggers are missing

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _ensure_publisher(self) -> EventPublisher:
        if self._publisher is None:
            self._publisher = self._connect()
        return self._publisher

    @property
    def active(self) -> bool:
        """Whether this relay may publish: it holds the lease, or runs without one."""
        return self._failover.active

    def lease_step(self) -> bool:
        """Take or renew the lease when due; whether this relay is active after.

        A standby tries to take an expired lease on every call; the holder renews every
        ``lease_renew_interval_s``. Taking it over heartbeats every partition at once (the
        new epoch fences what an older holder still sends, and regions stay fresh);
        losing it makes this relay a standby (``producer.relay_failover``).
        """
        step = self._failover.step()
        if step is Step.LOST:
            self._become_standby("renewal_refused")
        elif step is Step.TOOK_OVER:
            self.heartbeat()
        return step in (Step.ACTIVE, Step.TOOK_OVER)

    def _become_standby(self, why: str) -> None:
        """Stop publishing at once: drop the producer; rows it did not mark stay for the
        holder to publish."""
        self._failover.stand_by(why, self._last_seq)
        self._drop_publisher()

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:  # closing a broken client must not stop the loop
                log.warning("publisher_close_failed", exc_info=True)
            self._publisher = None

    def publish_batch(self) -> int:
        """Publish up to one batch of unpublished rows; return how many were published."""
        started = time.perf_counter()
        tracing.relay_woke()
        try:
            batch_size = self._options.batch_size
            rows = self._store.run(lambda conn: fetch_unpublished(conn, batch_size), reading=True)
            tracing.relay_read()
        except sa.exc.SQLAlchemyError as e:
            self._store.close()
            raise StoreError(f"reading the outbox failed: {e}") from e
        if not rows:
            return 0
        encoded: list[Encoded] = []
        quarantined: list[int] = []
        for row in rows:
            result = encode_row(row, self._zone)
            if isinstance(result, BadRowError):
                quarantined.append(int(row._mapping["seq"]))
                RELAY_QUARANTINED.inc()
                log.error("outbox_row_quarantined", seq=row._mapping["seq"], reason=str(result))
                continue
            if result.denied is not None:
                RELAY_DENIED.inc()
                log.error(
                    "outbox_row_published_as_denial",
                    seq=result.seq,
                    hash_prefix=result.event.key[:12].decode(),
                    reason=result.denied,
                )
            encoded.append(result)
        try:
            placements = self._publish(encoded)
        except RecordTooLargeError:
            placements = self._publish_one_by_one(encoded, quarantined)
        tracing.relay_acked(encoded, (e.event.at_ms for e in encoded))
        at_ms = self._now_ms()
        published = [
            Published(e.seq, p.partition, p.offset, at_ms)
            for e, p in zip(encoded, placements, strict=True)
            if p is not None
        ] + [Published(seq, None, None, at_ms) for seq in quarantined]
        self._mark(published, encoded)
        last_seq = int(rows[-1]._mapping["seq"])
        self._last_seq = max(self._last_seq, last_seq)
        if any(isinstance(item.event, EpochEvent) for item in encoded):
            self._epoch_published = True
        RELAY_PUBLISHED.inc(len(encoded))
        for item in encoded:
            RELAY_LATENCY.observe(max(0, at_ms - item.event.at_ms) / 1000)
        offsets: dict[int, list[int]] = {}  # partition -> [first, last] offset written
        for placed in published:
            if placed.partition is not None and placed.offset is not None:
                span = offsets.setdefault(placed.partition, [placed.offset, placed.offset])
                span[0], span[1] = min(span[0], placed.offset), max(span[1], placed.offset)
        log.info(  # the relay's canonical line: one per published batch
            "batch_published",
            records=len(encoded),
            quarantined=len(quarantined),
            first_seq=int(rows[0]._mapping["seq"]),
            last_seq=last_seq,
            partitions=offsets,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return len(rows)

    def _mark(self, published: list[Published], encoded: list[Encoded]) -> None:
        """Mark acknowledged rows published, renewing the lease in the same transaction:
        "still the holder" and "these rows are published" commit together, or neither."""

        def renew_and_mark(conn: sa.Connection) -> None:
            self._failover.renew_in(conn)
            mark_published(conn, published)

        began = self._failover.now()
        try:
            self._store.run(renew_and_mark)
        except LeaseLostError:
            self._published_late(encoded)
            raise
        except sa.exc.SQLAlchemyError as e:
            # Published but not marked: the next round publishes them again (duplicates).
            self._store.close()
            raise StoreError(f"marking published rows failed: {e}") from e
        self._failover.renewed(began)

    def _published_late(self, encoded: list[Encoded]) -> None:
        """Records acknowledged after this relay lost the lease: have the holder publish
        the newest row of each of their keys again (``producer.late_records``)."""
        try:
            with self._engine.begin() as conn:
                again, pending = republish_newest_or_pending(conn, encoded)
            deadline = time.monotonic() + LATE_WAIT_S
            while pending and time.monotonic() < deadline:  # in flight with the holder?
                time.sleep(0.05)
                with self._engine.begin() as conn:
                    pending = republish_newest_or_pending(conn, pending)[1]
        except sa.exc.SQLAlchemyError:  # the loop boundary logs; the regions still fence
            log.exception("late_records_not_republished", records=len(encoded))
            return
        if pending:
            log.warning("late_records_newest_rows_still_unpublished", records=len(pending))
        log.warning(
            "records_published_after_losing_the_lease",
            records=len(encoded),
            first_seq=encoded[0].seq if encoded else None,
            republished_seqs=len(again),
            epoch=self._failover.epoch_held,
        )

    def _publish(self, encoded: list[Encoded]) -> list[Placement | None]:
        """Sign and send ``encoded`` in order; the placement of each."""
        if not encoded:
            return []
        publisher = self._ensure_publisher()
        partitions = publisher.partitions()
        fence = self._failover.fence()
        records = [
            OutgoingRecord(
                e.event.key,
                e.value,
                tracing.record_headers(self._keyring.sign(e.event.key, e.value, fence), e.seq),
                partition_for(e.event.key, partitions),
            )
            for e in encoded
        ]
        self._failover.confirm()
        return list(publisher.publish(records))

    def _publish_one_by_one(
        self, encoded: list[Encoded], quarantined: list[int]
    ) -> list[Placement | None]:
        """The broker refused a batch as too large: send each record alone, and one it
        still refuses goes out as a denial of its token (or is quarantined), so one
        record never holds the stream back. Slow, and only taken after a refusal."""
        self._drop_publisher()  # a refusal is fatal to an idempotent producer
        placements: list[Placement | None] = []
        for item in encoded:
            placement = self._publish_alone(item)
            if placement is None:
                quarantined.append(item.seq)
            placements.append(placement)
        return placements

    def _publish_alone(self, item: Encoded) -> Placement | None:
        """Publish one record by itself, else its denial; None once quarantined."""
        attempt: Encoded | None = item
        reason = ""
        while attempt is not None:
            try:
                [placement] = self._publish([attempt])
            except RecordTooLargeError as e:
                self._drop_publisher()
                reason = f"the broker refused the record: {e}"
                attempt = deny(attempt, reason)
                continue
            if attempt is not item:
                RELAY_DENIED.inc()
                log.error(
                    "outbox_row_published_as_denial",
                    seq=item.seq,
                    hash_prefix=item.event.key[:12].decode(),
                    reason=reason,
                )
            return placement
        RELAY_QUARANTINED.inc()
        log.error("outbox_row_quarantined", seq=item.seq, reason=reason)
        return None

    def certified_ms(self) -> int:
        """The newest time T (store clock) such that every change committed before T has
        been published: the store's now, held back by the oldest unpublished outbox row
        and by a pending backfill.

        The clock is read first, then the backlog in a later statement (a later snapshot):
        a row committed before T is visible to that statement, so it is either published
        or unpublished with ``recorded_at_ms >= `` the bound; a row committed later was
        committed after T. Rows are stamped before they commit, so the bound holds.
        """
        try:
            with self._engine.connect() as conn:
                bound = db_now_ms(conn)
                oldest = oldest_unpublished_ms(conn)
                pending = pending_since_ms(conn)
                self._check_triggers(conn, bound)
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"reading the store clock failed: {e}") from e
        for limit in (oldest, pending, self._blind_since_ms):
            if limit is not None:
                bound = min(bound, limit)
        return bound

    @property
    def triggers_missing(self) -> bool:
        """Whether the last check found outbox triggers missing (certification is frozen)."""
        return self._blind_since_ms is not None

    def _check_triggers(self, conn: sa.Connection, now_ms: int) -> None:
        """Every ``trigger_check_interval_s``: are the outbox triggers in place? While any
        is missing, changes to the token table reach no region, so heartbeats stop
        certifying anything after the last time they were seen (regions turn stale and
        validators answer unavailable instead of trusting a blind feed)."""
        if self._clock() - self._triggers_checked < self._options.trigger_check_interval_s:
            return
        self._triggers_checked = self._clock()
        missing = missing_triggers(conn)
        RELAY_TRIGGERS_MISSING.set(len(missing))
        if not missing:
            if self._blind_since_ms is not None:
                log.warning("store_triggers_back", blind_since_ms=self._blind_since_ms)
            self._blind_since_ms = None
            self._triggers_ok_ms = now_ms
            return
        if self._blind_since_ms is None:
            self._blind_since_ms = self._triggers_ok_ms if self._triggers_ok_ms else now_ms
        log.error(
            "store_triggers_missing",
            missing=missing,
            blind_since_ms=self._blind_since_ms,
            fix="tokensync store repair",
        )

    def heartbeat(self) -> None:
        """One signed heartbeat into every partition of the token topic, stamped with
        ``certified_ms`` (see ``shared.events.Heartbeat``)."""
        publisher = self._ensure_publisher()
        at_ms = self.certified_ms()
        fence = self._failover.fence()
        records = []
        for partition in range(publisher.partitions()):
            beat = Heartbeat(partition=partition, at_ms=at_ms, seq=self._last_seq)
            value = encode(beat)
            headers = self._keyring.sign(beat.key, value, fence)
            records.append(OutgoingRecord(beat.key, value, headers, partition))
        self._failover.confirm()
        publisher.publish(records)
        self._last_heartbeat = self._clock()

    def close(self) -> None:
        """Close the Kafka client and the held store connection (``run`` does this when
        it stops)."""
        self._drop_publisher()
        self._store.close()

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set: publish, heartbeat, wait for a commit or the next beat."""
        backoff = self._options.backoff_initial_s
        counter = threading.Thread(  # a thread of its own: see producer.relay_backlog
            target=count_backlog_until,
            args=(self._engine, stop, self._options.backlog_interval_s),
            name="relay-backlog",
            daemon=True,
        )
        counter.start()
        log.info(
            "relay_started",
            batch_size=self._options.batch_size,
            heartbeat_interval_s=self._options.heartbeat_interval_s,
        )
        while not stop.is_set():
            try:
                if not self.lease_step():
                    stop.wait(self._options.lease_poll_interval_s)  # a standby
                    continue
                while not stop.is_set():
                    count = self.publish_batch()
                    if count < self._options.batch_size:
                        break
                    if self._clock() - self._last_heartbeat >= self._options.heartbeat_interval_s:
                        self.heartbeat()
                # A heartbeat right after an epoch certifies every partition past it at once:
                # receipts of mass revocations take milliseconds, not a heartbeat interval.
                # (Only then: a heartbeat round trip after every batch delays the next one.)
                if self._epoch_published or (
                    self._clock() - self._last_heartbeat >= self._options.heartbeat_interval_s
                ):
                    self._epoch_published = False
                    self.heartbeat()
                backoff = self._options.backoff_initial_s
            except LeaseLostError as e:
                self._become_standby(str(e))
                continue
            except (PublishError, StoreError) as e:
                log.warning("relay_retrying", error=str(e), backoff_s=round(backoff, 3))
                self._drop_publisher()
                stop.wait(backoff)
                backoff = min(backoff * 2, self._options.backoff_max_s)
                continue
            except Exception:  # the loop boundary: log with traceback and keep going
                log.exception("relay_step_failed")
                self._drop_publisher()
                stop.wait(backoff)
                backoff = min(backoff * 2, self._options.backoff_max_s)
                continue
            due = self._last_heartbeat + self._options.heartbeat_interval_s - self._clock()
            self._waker.wait(max(0.0, min(due, 0.25)))
        self._drop_publisher()
        self._store.close()
        self._failover.release()
        counter.join(timeout=5)
        log.info("relay_stopped", last_seq=self._last_seq)

    def backlog(self) -> int:
        """Unpublished outbox rows, also set as the ``tokensync_relay_backlog_records``
        gauge (``run`` counts every ``backlog_interval_s``, whether Kafka answers or not)."""
        return count_backlog(self._engine)
