"""Publishing token rows that are older than tokensync's triggers (a backfill).

Installing tokensync on a table a Laravel app already fills keeps its rows, but no
trigger ever saw them: without a backfill every region would answer *unknown* for
them and adopting tokensync would log out every existing user. A row older than the
triggers is recognised by having no ``tokensync_token_meta`` row (the insert trigger
writes one for every new token). The backfill gives each such row its meta row (issue
time: ``created_at`` but never later than the backfill's own time, or 0 when it has
none, so every epoch covers it) and, for rows
not yet expired, an ``issued`` outbox row, in batches of one transaction each: an
interrupted backfill resumes where it stopped and never publishes a row twice.

While a backfill is pending, ``tokensync_state`` holds ``backfill_pending_since_ms``;
the relay never certifies a heartbeat past that time, so no region looks fresh (and
answers *valid*) before every old row was published.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from producer import audit as audit_log
from producer import triggers_mysql, txmarks
from producer.audit import AuditContext
from producer.clock import db_now_ms
from producer.models import META, OUTBOX, PAT, STATE
from producer.schema import write_transaction
from shared.logs import get_logger

__all__ = ["BackfillResult", "backfill", "mark_pending", "pending_rows", "pending_since_ms"]

log = get_logger(__name__)

PENDING = "backfill_pending_since_ms"
# pg_advisory_xact_lock key of backfill batches: "backfill" as a 63-bit number.
_PG_LOCK = int.from_bytes(b"backfill", "big") >> 1

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackfillResult:
    """How many old rows one run took in, in how many batches."""

    rows: int
    batches: int


def _without_meta() -> sa.ColumnElement[bool]:
    return ~sa.exists().where(META.c.token_id == PAT.c.id).correlate(PAT)


def pending_rows(conn: sa.Connection) -> int:
    """Rows older than the triggers that no backfill has taken in yet."""
    query = sa.select(sa.func.count()).select_from(PAT).where(_without_meta())
    return int(conn.execute(query).scalar_one())


def pending_since_ms(conn: sa.Connection) -> int | None:
    """Since when (database clock) a backfill is pending, or None when none is."""
    if not sa.inspect(conn).has_table(STATE.name):
        return None
    value = conn.execute(sa.select(STATE.c.value_ms).where(STATE.c.name == PENDING)).scalar()
    return None if value is None else int(value)


def mark_pending(conn: sa.Connection) -> bool:
    """Record that a backfill is due if any row lacks its meta row; True if one is."""
    if conn.execute(sa.select(PAT.c.id).where(_without_meta()).limit(1)).first() is None:
        return False
    if pending_since_ms(conn) is None:
        conn.execute(STATE.insert().values(name=PENDING, value_ms=db_now_ms(conn)))
    return True


_COLUMNS = (
    "kind, op, token_id, token_hash, tokenable_type, tokenable_id, name, abilities,"
    " expires_at, row_created_at, issued_at_ms, recorded_at_ms"
)


def _issued_sql(dialect: str) -> str:
    """A row's issue time from its ``created_at``, clamped to ``:now`` (the store clock at
    backfill): a created_at ahead of the clock (an app writing local time, a clock step)
    must not put the issue time after the moment tokensync learned of the row, or no epoch
    taken now would cover a token that already exists."""
    if dialect in triggers_mysql.DIALECTS:
        return (
            "LEAST(:now, GREATEST(0,"
            " COALESCE(CAST(FLOOR(UNIX_TIMESTAMP(p.created_at) * 1000) AS SIGNED), 0)))"
        )
    if dialect == "postgresql":
        return (
            "CASE WHEN p.created_at IS NOT NULL AND isfinite(p.created_at) THEN"
            " least(:now, greatest(0, floor(extract(epoch FROM p.created_at) * 1000)::bigint))"
            " ELSE 0 END"
        )
    return "min(:now, max(0, coalesce(CAST(strftime('%s', p.created_at) AS INTEGER) * 1000, 0)))"


def _take_batch(conn: sa.Connection, batch_size: int) -> int:
    """Meta and outbox rows for up to ``batch_size`` old rows; how many were taken.

    The batch is tokensync's own act, not plain SQL: it marks its transaction so the
    ``sql`` audit trigger records none of its outbox rows (``backfill`` writes one
    audit record for the whole run)."""
    marker = txmarks.mark(conn, txmarks.AUDIT)
    try:
        return _take_batch_marked(conn, batch_size)
    finally:
        txmarks.unmark(conn, txmarks.AUDIT, marker)


def _take_batch_marked(conn: sa.Connection, batch_size: int) -> int:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
    query = sa.select(PAT.c.id).where(_without_meta()).order_by(PAT.c.id).limit(batch_size)
    if dialect == "postgresql" or dialect in triggers_mysql.DIALECTS:
        query = query.with_for_update(of=PAT)
    ids = [int(i) for i in conn.execute(query).scalars()]
    if not ids:
        conn.execute(STATE.delete().where(STATE.c.name == PENDING))
        return 0
    now_ms = db_now_ms(conn)
    issued = _issued_sql(dialect)
    if dialect == "postgresql":
        live = "(p.expires_at IS NULL OR p.expires_at > (now() AT TIME ZONE 'UTC'))"
        owner = "CAST(p.tokenable_id AS text)"
    elif dialect in triggers_mysql.DIALECTS:
        live = "(p.expires_at IS NULL OR p.expires_at > UTC_TIMESTAMP())"
        owner = "CAST(p.tokenable_id AS CHAR)"
    else:
        live = "(p.expires_at IS NULL OR p.expires_at > strftime('%Y-%m-%d %H:%M:%S', 'now'))"
        owner = "CAST(p.tokenable_id AS TEXT)"
    params = {"lo": ids[0], "hi": ids[-1], "now": now_ms}
    # Rows between lo and hi without meta are exactly ``ids`` (locked on PostgreSQL).
    among = "p.id BETWEEN :lo AND :hi AND NOT EXISTS (SELECT 1 FROM tokensync_token_meta m WHERE m.token_id = p.id)"  # noqa: E501
    conn.execute(
        sa.text(
            f"INSERT INTO tokensync_outbox ({_COLUMNS})"  # noqa: S608 - constants only
            f" SELECT 'token', 'issued', p.id, p.token, p.tokenable_type, {owner}, p.name,"
            f" p.abilities, p.expires_at, p.created_at, {issued}, :now"
            f" FROM personal_access_tokens p WHERE {among} AND {live} ORDER BY p.id"
        ),
        params,
    )
    conn.execute(
        sa.text(
            "INSERT INTO tokensync_token_meta (token_id, issued_at_ms)"  # noqa: S608
            f" SELECT p.id, {issued} FROM personal_access_tokens p WHERE {among}"
        ),
        params,
    )
    return len(ids)


def backfill(
    engine: sa.Engine,
    *,
    batch_size: int = 5000,
    progress: Progress | None = None,
    audit: AuditContext | None = None,
) -> BackfillResult:
    """Take in every row older than the triggers, batch by batch; resumable.

    ``progress(done, total)`` is called after each committed batch. A run that took
    rows leaves one audit record (action ``token.backfill``, actor ``audit``: who ran
    it, by default this process's OS user), written with the batch that finds nothing
    left; an interrupted run's rows are counted by the run that completes it."""
    if batch_size < 1:
        raise ValueError("batch size must be positive")
    with engine.connect() as conn:
        total = pending_rows(conn)
    done = batches = 0
    while True:
        with write_transaction(engine) as conn:
            taken = _take_batch(conn, batch_size)
            if not taken and done:
                audit_log.record(
                    conn,
                    audit_log.begin(conn),
                    audit or _process_actor(),
                    action="token.backfill",
                    seq=conn.execute(sa.select(sa.func.max(OUTBOX.c.seq))).scalar(),
                    removed=None,
                    detail={"rows": done, "batches": batches},
                )
        if not taken:
            break
        done += taken
        batches += 1
        if progress is not None:
            progress(done, max(total, done))
        else:
            log.info("backfill_progress", rows=done, of=max(total, done))
    if batches:
        log.info("backfill_done", rows=done, batches=batches)
    return BackfillResult(done, batches)


def _process_actor() -> AuditContext:
    """The OS user (from the process uid, not the environment) and host of this process."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid {os.getuid()}"
    return AuditContext.python(f"{user}@{socket.gethostname()}")
