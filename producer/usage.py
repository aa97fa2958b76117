"""Applying usage reports to ``last_used_at``, in batches, never on the request path
(and handing them to the watch's usage window and detectors, ``producer.detectors``).

Regions forward what their validators saw (``shared.usage``) to the usage topic,
signed with the region's own key (``shared.region_keys``; the shared keyring until
region keys are configured); this applier verifies every record, refuses one that
claims another region than its signer's, drops (and counts,
and logs) what is forged, malformed or carries a time out of range, and moves
``last_used_at`` forward only (an update that touches only
``last_used_at``/``updated_at`` publishes nothing: the triggers skip it). A
dropped record's offset is committed like any other, so it is never read again.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa

from producer.models import PAT
from shared.errors import EventDecodeError, PublishError, SignatureError
from shared.events import Keyring
from shared.logs import get_logger
from shared.metrics import USAGE_REPORTS
from shared.region_keys import RegionKeys
from shared.usage import SignedUsageRecord, UsageReport, decode_usage_report

if TYPE_CHECKING:  # only the relay process needs kafka; this module stays importable without it
    from producer.detectors import Watch
    from producer.kafka_io import UsageConsumer

__all__ = ["MAX_AHEAD_S", "UsageApplier", "UsageOutcome", "apply_usage", "merge_reports"]

log = get_logger(__name__)

MAX_AHEAD_S = 600.0
"""How far ahead of the store's clock a reported use may be (validators' clocks drift);
anything later is refused: ``last_used_at`` only moves forward, so it would stick."""


class UsageOutcome(StrEnum):
    """What became of one usage record."""

    APPLIED = "applied"
    FORGED = "forged"  # not signed by a key it may be signed with, altered, wrong region
    MALFORMED = "malformed"  # signed, but not a well-formed report
    OUT_OF_RANGE = "out_of_range"  # a time before 1970 or too far in the future


def _judge(
    record: SignedUsageRecord, keyring: Keyring, now_ms: int, region_keys: RegionKeys | None = None
) -> tuple[UsageOutcome, UsageReport | None, str, str]:
    """The outcome, the report (when it decodes), why, and the event to log a refusal as.

    A record a region key signed is that region's and may speak only for it; a record the
    shared keyring signed is accepted only for a region without a key of its own."""
    rejected = "usage_report_rejected"
    keys = region_keys or RegionKeys()
    try:
        signer = keys.signer(record.key or b"", record.value or b"", record.headers)
        report = decode_usage_report(record, keyring if signer is None else keys)
    except SignatureError as e:
        return UsageOutcome.FORGED, None, str(e), rejected
    except EventDecodeError as e:
        return UsageOutcome.MALFORMED, None, str(e), rejected
    if signer is not None and report.region != signer:
        why = f"signed by region {signer}'s key, claims region {report.region[:64]}"
        return UsageOutcome.FORGED, None, why, "usage_report_wrong_region"
    if signer is None and report.region in keys.regions:
        why = f"region {report.region} signs with its own key; the shared keyring does not"
        return UsageOutcome.FORGED, None, why, "usage_report_wrong_region"
    limit = now_ms + int(MAX_AHEAD_S * 1000)
    late = [at for at in report.usage.values() if at > limit]
    if late:
        return (
            UsageOutcome.OUT_OF_RANGE,
            report,
            f"{len(late)} use(s) after now + {MAX_AHEAD_S:g} s",
            rejected,
        )
    return UsageOutcome.APPLIED, report, "", ""


def merge_reports(
    records: Iterable[SignedUsageRecord],
    keyring: Keyring,
    now_ms: int | None = None,
    accepted: list[UsageReport] | None = None,
    region_keys: RegionKeys | None = None,
) -> dict[int, int]:
    """Newest use per token id across the records that verify and are in range; every
    other record is dropped, counted (``tokensync_usage_reports_total``) and logged. The
    reports that verify are appended to ``accepted`` (for the watch). With
    ``region_keys``, each report is its signer's (``_judge``)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    merged: dict[int, int] = {}
    for record in records:
        outcome, report, why, event = _judge(record, keyring, now, region_keys)
        USAGE_REPORTS.labels(outcome.value).inc()
        if outcome is not UsageOutcome.APPLIED or report is None:
            claimed = (record.key or b"")[:64].decode("utf-8", "replace")
            log.warning(
                event,
                reason=outcome.value,
                detail=why,
                partition=record.partition,
                offset=record.offset,
                claimed_region=claimed,
            )
            continue
        if accepted is not None:
            accepted.append(report)
        for token_id, at in report.usage.items():
            if merged.get(token_id, 0) < at:
                merged[token_id] = at
    return merged


def apply_usage(engine: sa.Engine, usage: dict[int, int]) -> int:
    """Move ``last_used_at`` forward for every token in ``usage``; return rows updated."""
    if not usage:
        return 0
    rows = [
        {
            "u_id": token_id,
            "u_at": dt.datetime.fromtimestamp(at / 1000, dt.UTC).replace(
                tzinfo=None, microsecond=0
            ),
        }
        for token_id, at in usage.items()
    ]
    stmt = (
        PAT.update()
        .where(PAT.c.id == sa.bindparam("u_id"))
        .where(sa.or_(PAT.c.last_used_at.is_(None), PAT.c.last_used_at < sa.bindparam("u_at")))
        .values(last_used_at=sa.bindparam("u_at"))
    )
    with engine.begin() as conn:
        result = conn.execute(stmt, rows)
    return int(result.rowcount or 0)


class UsageApplier:
    """Consumes the usage topic and applies what verifies to the store until stopped."""

    def __init__(
        self,
        engine: sa.Engine,
        connect: Callable[[], UsageConsumer],
        keyring: Keyring,
        *,
        clock: Callable[[], float] = time.time,
        watch: Watch | None = None,
        region_keys: RegionKeys | None = None,
    ) -> None:
        self._engine = engine
        self._region_keys = region_keys
        self._connect = connect
        self._keyring = keyring
        self._clock = clock
        self._watch = watch

    def run(self, stop: threading.Event) -> None:
        """Loop: poll, verify, apply, commit; reconnect with backoff on errors."""
        consumer: UsageConsumer | None = None
        while not stop.is_set():
            try:
                if consumer is None:
                    consumer = self._connect()
                records = consumer.poll(1.0)
                if records:
                    reports: list[UsageReport] = []
                    now_ms = int(self._clock() * 1000)
                    usage = merge_reports(
                        records, self._keyring, now_ms, reports, self._region_keys
                    )
                    if self._watch is not None:  # before last_used_at moves (dormancy)
                        self._watched(self._watch.ingest, reports)
                    updated = apply_usage(self._engine, usage)
                    consumer.commit()
                    log.info("usage_applied", reports=len(records), rows=updated)
                if self._watch is not None:
                    self._watched(self._watch.tick)
            except (PublishError, sa.exc.SQLAlchemyError) as e:
                log.warning("usage_retrying", error=str(e))
                consumer = self._drop(consumer)
                stop.wait(1.0)
            except Exception:  # the loop boundary: log with traceback, keep the thread alive
                log.exception("usage_step_failed")
                consumer = self._drop(consumer)
                stop.wait(1.0)
        self._drop(consumer)

    @staticmethod
    def _watched(step: Callable[..., object], *args: object) -> None:
        """A step of the watch: whatever fails there is logged with its traceback and
        never holds up ``last_used_at`` (the batch is applied and committed regardless)."""
        try:
            step(*args)
        except Exception:  # the watch's boundary inside the usage loop
            log.exception("watch_step_failed")

    @staticmethod
    def _drop(consumer: UsageConsumer | None) -> None:
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # closing a broken client must not stop the loop
                log.warning("usage_consumer_close_failed", exc_info=True)
