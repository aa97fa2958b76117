"""Reading the outbox in seq order, turning rows into records, marking them published.

A row becomes the event it stands for when it can: a token row whose values do not
fit the wire format (an ability that is not Unicode text, an expiry Python cannot
represent, a record over the size limit, ...) becomes a *denial*, a ``revoked`` event
of its hash with the minimal payload, because a token the regions cannot hold as a
grant must never stay valid there. A row that cannot even be denied (its hash is no
SHA-256 hex, so no presented token can match it) is *quarantined*: counted, logged,
and marked so the relay moves on.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from producer import triggers_mysql
from producer.models import OUTBOX
from producer.tokens import decode_abilities
from shared.events import MAX_RECORD_BYTES, EpochEvent, TokenEvent, TokenOp, encode

__all__ = [
    "BadRowError",
    "Encoded",
    "Published",
    "deny",
    "encode_row",
    "fetch_unpublished",
    "mark_published",
    "oldest_unpublished_ms",
    "parse_db_time",
    "row_to_event",
    "unpublished_count",
]

_HASH = re.compile(r"\A[0-9a-f]{64}\Z")
_MAX_ABILITIES = 256
_MAX_ABILITY = 255
_MAX_NAME = 4096
_MAX_OWNER = 255
_MAX_SCOPE = 600


class BadRowError(ValueError):
    """An outbox row that cannot be published as the event it stands for."""


@dataclass(frozen=True, slots=True)
class Published:
    """One outbox row's fate: acknowledged at ``partition``/``offset`` at ``at_ms``.

    A quarantined row has no partition and no offset (nothing was sent)."""

    seq: int
    partition: int | None
    offset: int | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """What the relay sends for one row: the event, its bytes, and why it was denied."""

    seq: int
    event: TokenEvent | EpochEvent
    value: bytes
    denied: str | None = None


# Times travel as text: a value Python's datetime cannot hold (PostgreSQL 'infinity',
# year 10000, SQLite integers or '0000-00-00') must reach our parser, not the driver's.
_COLUMNS = [
    c if c.name not in ("expires_at", "row_created_at") else sa.cast(c, sa.Text).label(c.name)
    for c in OUTBOX.c
]


def fetch_unpublished(conn: sa.Connection, limit: int) -> list[sa.Row[tuple[object, ...]]]:
    """Up to ``limit`` unpublished rows, lowest seq first (times as the database's text)."""
    return list(
        conn.execute(
            sa.select(*_COLUMNS)
            .where(OUTBOX.c.published_at_ms.is_(None))
            .order_by(OUTBOX.c.seq)
            .limit(limit)
        ).all()
    )


def unpublished_count(conn: sa.Connection) -> int:
    """How many rows wait for the relay (the outbox backlog)."""
    count = conn.execute(
        sa.select(sa.func.count()).where(OUTBOX.c.published_at_ms.is_(None))
    ).scalar_one()
    return int(count)


def oldest_unpublished_ms(conn: sa.Connection) -> int | None:
    """The smallest ``recorded_at_ms`` of an unpublished row, or None when all are out."""
    value = conn.execute(
        sa.select(sa.func.min(OUTBOX.c.recorded_at_ms)).where(OUTBOX.c.published_at_ms.is_(None))
    ).scalar_one()
    return None if value is None else int(value)


#: Texts at most this long are decoded once per batch run (``_CACHE_SIZE`` of them): a
#: backlog's rows mostly share their abilities and, per second, their creation time.
_CACHED_TEXT = 256
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_abilities(text: str) -> tuple[str, ...]:
    return decode_abilities(text)


def _abilities(text: str | None) -> tuple[str, ...]:
    """``decode_abilities``, remembered for short texts (a tuple: safe to share)."""
    if text is not None and len(text) <= _CACHED_TEXT:
        return _cached_abilities(text)
    return decode_abilities(text)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_time(value: str, zone: dt.tzinfo) -> int:
    return _parse_db_time(value, zone)


def parse_db_time(value: object, zone: dt.tzinfo = dt.UTC) -> int:
    """Milliseconds since the epoch of a naive timestamp (wall-clock time in ``zone``,
    the store's zone) as the database returned it.

    Raises BadRowError for anything that is not a real instant between 1970 and 9999."""
    if type(value) is str and len(value) <= _CACHED_TEXT:
        return _cached_time(value, zone)  # a refused one raises again: errors are not kept
    return _parse_db_time(value, zone)


def _parse_db_time(value: object, zone: dt.tzinfo) -> int:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError as e:
            raise BadRowError(f"timestamp {value[:40]!r} is not a date and time") from e
    else:
        raise BadRowError(f"timestamp of type {type(value).__name__} is not a date and time")
    aware = moment if moment.tzinfo else moment.replace(tzinfo=zone)
    ms = int(aware.timestamp() * 1000)
    if ms < 0:
        raise BadRowError(f"timestamp {value!s:.40} lies before 1970")
    return ms


def _text(value: object, limit: int, what: str) -> str:
    text = "" if value is None else str(value)
    if len(text) > limit:
        raise BadRowError(f"{what} is longer than {limit} characters")
    return text


def row_to_event(
    row: sa.Row[tuple[object, ...]], zone: dt.tzinfo = dt.UTC
) -> TokenEvent | EpochEvent:
    """The event an outbox row stands for, or BadRowError when it does not fit the wire
    (naive times read in ``zone``, the store's)."""
    m = row._mapping
    seq = int(m["seq"])
    at_ms = int(m["recorded_at_ms"])
    if m["kind"] == "epoch":
        before = int(m["before_ms"])
        if before < 0:
            raise BadRowError("an epoch's time lies before 1970")
        return EpochEvent(
            seq=seq, scope=_text(m["scope"], _MAX_SCOPE, "scope"), before_ms=before, at_ms=at_ms
        )
    token_hash = str(m["token_hash"] or "")
    if not _HASH.match(token_hash):
        raise BadRowError("the token column holds no SHA-256 hex digest")
    issued_at = max(0, int(m["issued_at_ms"] or 0))
    created = m["row_created_at"]
    expires = m["expires_at"]
    abilities = _abilities(m["abilities"])
    if len(abilities) > _MAX_ABILITIES:
        raise BadRowError(f"more than {_MAX_ABILITIES} abilities")
    if any(len(a) > _MAX_ABILITY for a in abilities):
        raise BadRowError(f"an ability is longer than {_MAX_ABILITY} characters")
    token_id = None if m["token_id"] is None else int(m["token_id"])
    return TokenEvent(
        seq=seq,
        op=TokenOp(str(m["op"])),
        token_hash=token_hash,
        token_id=token_id if token_id is None or token_id >= 0 else None,
        tokenable_type=_text(m["tokenable_type"], _MAX_OWNER, "tokenable type"),
        tokenable_id=_text(m["tokenable_id"], _MAX_OWNER, "tokenable id"),
        name=_text(m["name"], _MAX_NAME, "name"),
        abilities=abilities,
        created_at_ms=parse_db_time(created, zone) if created is not None else issued_at,
        issued_at_ms=issued_at,
        expires_at_ms=parse_db_time(expires, zone) if expires is not None else None,
        at_ms=at_ms,
    )


def _denial(row: sa.Row[tuple[object, ...]]) -> TokenEvent | None:
    """A ``revoked`` event naming the row's token with nothing else, or None if it has
    no SHA-256 hash to name."""
    m = row._mapping
    token_hash = str(m["token_hash"] or "")
    if m["kind"] != "token" or not _HASH.match(token_hash):
        return None
    token_id = m["token_id"]
    return TokenEvent(
        seq=int(m["seq"]),
        op=TokenOp.REVOKED,
        token_hash=token_hash,
        token_id=token_id if isinstance(token_id, int) and token_id >= 0 else None,
        tokenable_type="",
        tokenable_id="",
        name="",
        abilities=(),
        created_at_ms=0,
        issued_at_ms=0,
        expires_at_ms=None,
        at_ms=max(0, int(m["recorded_at_ms"] or 0)),
    )


def encode_row(row: sa.Row[tuple[object, ...]], zone: dt.tzinfo = dt.UTC) -> Encoded | BadRowError:
    """The record for one row: its event if that fits the wire, else a denial of its
    token; a BadRowError (to quarantine) when neither can be built."""
    try:
        event = row_to_event(row, zone)
        value = encode(event)
        if len(value) > MAX_RECORD_BYTES:
            raise BadRowError(f"the record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
        return Encoded(event.seq, event, value)
    except (BadRowError, ValueError, TypeError, orjson.JSONEncodeError) as e:
        problem = e if isinstance(e, BadRowError) else BadRowError(f"{type(e).__name__}: {e}")
    denial = _denial(row)
    if denial is None:
        return problem
    return Encoded(denial.seq, denial, encode(denial), denied=str(problem))


def deny(item: Encoded, reason: str) -> Encoded | None:
    """The denial of ``item``'s token (a minimal ``revoked`` event at its seq), or None
    when ``item`` is no token event or already the smallest it can be."""
    event = item.event
    if not isinstance(event, TokenEvent) or item.denied is not None:
        return None
    denial = TokenEvent(
        seq=event.seq,
        op=TokenOp.REVOKED,
        token_hash=event.token_hash,
        token_id=event.token_id,
        tokenable_type="",
        tokenable_id="",
        name="",
        abilities=(),
        created_at_ms=0,
        issued_at_ms=0,
        expires_at_ms=None,
        at_ms=event.at_ms,
    )
    return Encoded(event.seq, denial, encode(denial), denied=reason)


_MARK_PUBLISHED_PG = sa.text(
    f"UPDATE {OUTBOX.name} AS o SET published_at_ms = placed.a, "  # noqa: S608 - a constant
    "kafka_partition = placed.p, kafka_offset = placed.o "
    "FROM unnest(CAST(:seqs AS bigint[]), CAST(:parts AS integer[]), "
    "CAST(:offs AS bigint[]), CAST(:ats AS bigint[])) AS placed(s, p, o, a) "
    "WHERE o.seq = placed.s"
)


# MySQL 8 and MariaDB 10.6+: the same in one statement, the batch as one JSON parameter
# (PyMySQL's executemany sends an UPDATE per row: a round trip each while the next batch,
# perhaps a revocation, waits). -1 stands for a quarantined row's missing placement.
_MARK_PUBLISHED_MYSQL = sa.text(
    f"UPDATE {OUTBOX.name} AS o JOIN JSON_TABLE(:placed, '$[*]' COLUMNS ("  # noqa: S608
    "s BIGINT PATH '$[0]', p BIGINT PATH '$[1]', f BIGINT PATH '$[2]', a BIGINT PATH '$[3]'"
    ")) AS placed ON o.seq = placed.s SET o.published_at_ms = placed.a, "
    "o.kafka_partition = NULLIF(placed.p, -1), o.kafka_offset = NULLIF(placed.f, -1)"
)


def mark_published(conn: sa.Connection, published: Sequence[Published]) -> None:
    """Record partition, offset and time of acknowledged rows (one statement on PostgreSQL,
    MySQL and MariaDB)."""
    if not published:
        return
    if conn.dialect.name == "postgresql":
        # One statement with four array parameters: it compiles once and is cached, where a
        # VALUES list of 2,000 rows would be compiled anew for every batch (~0.3 s).
        conn.execute(
            _MARK_PUBLISHED_PG,
            {
                "seqs": [p.seq for p in published],
                "parts": [p.partition for p in published],
                "offs": [p.offset for p in published],
                "ats": [p.at_ms for p in published],
            },
        )
        return
    if conn.dialect.name in triggers_mysql.DIALECTS:
        placed = [
            [
                p.seq,
                -1 if p.partition is None else p.partition,
                -1 if p.offset is None else p.offset,
                p.at_ms,
            ]
            for p in published
        ]
        conn.execute(_MARK_PUBLISHED_MYSQL, {"placed": orjson.dumps(placed).decode()})
        return
    conn.execute(
        OUTBOX.update()
        .where(OUTBOX.c.seq == sa.bindparam("b_seq"))
        .values(
            published_at_ms=sa.bindparam("b_at"),
            kafka_partition=sa.bindparam("b_partition"),
            kafka_offset=sa.bindparam("b_offset"),
        ),
        [
            {"b_seq": p.seq, "b_at": p.at_ms, "b_partition": p.partition, "b_offset": p.offset}
            for p in published
        ],
    )
