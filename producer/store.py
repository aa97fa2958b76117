"""The token store: Sanctum's table plus tokensync's epochs, all changes via the outbox.

Every mutation is one SQL transaction; the outbox rows are written by the
database triggers (``producer.triggers``), and the method returns the seq of
the last outbox row its change produced. Plaintext tokens exist only in the
``IssuedToken`` returned to the caller.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects import postgresql as pg

from producer import audit as audit_log
from producer import triggers_mysql, txmarks
from producer.audit import AuditContext
from producer.models import Epoch, OutboxRow, PersonalAccessToken, RegionRow, TokenMeta
from producer.schema import create_engine, migrate, write_transaction
from producer.tokens import (
    decode_abilities,
    encode_abilities,
    format_token,
    generate_token,
    hash_token,
    parse_token,
)
from shared.errors import NotFoundError, StoreError, UsageError
from shared.events import (
    GLOBAL_SCOPE,
    ability_scope,
    canonical_principal_id,
    principal_scope,
)
from shared.logs import get_logger
from shared.settings import Region, Settings

__all__ = [
    "FUTURE_SKEW_MS",
    "IssuedToken",
    "Mutation",
    "OutboxPosition",
    "TokenInfo",
    "TokenStore",
    "live_condition",
    "wildcard_token_ids",
]

log = get_logger(__name__)

PAT = cast(sa.Table, PersonalAccessToken.__table__)
OUTBOX = cast(sa.Table, OutboxRow.__table__)
EPOCHS = cast(sa.Table, Epoch.__table__)
META = cast(sa.Table, TokenMeta.__table__)
REGIONS = cast(sa.Table, RegionRow.__table__)

_MAX_NAME = 4096
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_MAX_ABILITY = 255
_MAX_ABILITIES = 256
_MYSQL_TEXT_BYTES = 65_535
#: How far past the database's clock ``revoke_all(before=...)`` may reach (clock skew):
#: an epoch in the future would deny tokens not issued yet, and epochs never move back.
FUTURE_SKEW_MS = 5_000


def utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime (whole seconds) Laravel writes."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 (UTC) of a naive-UTC datetime, or None."""
    return None if value is None else value.replace(tzinfo=dt.UTC).isoformat()


def to_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch of a naive-UTC or aware datetime."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return int(aware.timestamp() * 1000)


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``plain_text_token`` (``id|plain``) is shown once and never stored."""

    id: int
    tokenable_type: str
    tokenable_id: int | str
    name: str
    abilities: tuple[str, ...]
    expires_at: dt.datetime | None
    created_at: dt.datetime
    token_hash: str
    seq: int
    plain_text_token: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """What the caller of ``issue`` sees (the only place the plaintext appears)."""
        return {
            "token": self.plain_text_token,
            "id": self.id,
            "seq": self.seq,
            "tokenable_type": self.tokenable_type,
            "tokenable_id": self.tokenable_id,
            "name": self.name,
            "abilities": list(self.abilities),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True)
class TokenInfo:
    """A token row as listings show it (never its hash in full, never its plaintext)."""

    id: int
    tokenable_type: str
    tokenable_id: int | str
    name: str
    abilities: tuple[str, ...]
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    created_at: dt.datetime | None
    token_hash: str = field(repr=False)

    @property
    def hash_prefix(self) -> str:
        """The first 12 hex digits of the token's hash (safe to log)."""
        return self.token_hash[:12]

    def to_json(self) -> dict[str, Any]:
        """A listing entry: never the plaintext, only a prefix of the hash."""
        return {
            "id": self.id,
            "tokenable_type": self.tokenable_type,
            "tokenable_id": self.tokenable_id,
            "name": self.name,
            "abilities": list(self.abilities),
            "hash_prefix": self.hash_prefix,
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True)
class Mutation:
    """The outcome of a revocation: the outbox seq that carries it and the rows it removed."""

    seq: int
    removed: int
    scope: str | None = None
    before_ms: int | None = None
    per_token: int = 0
    audit_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "removed": self.removed,
            "scope": self.scope,
            "before_ms": self.before_ms,
            "per_token": self.per_token,
            "audit_id": self.audit_id,
        }


@dataclass(frozen=True)
class OutboxPosition:
    """Where the relay put an outbox row: its partition and offset once acknowledged."""

    seq: int
    kind: str
    key: str
    partition: int | None
    offset: int | None
    recorded_at_ms: int
    published_at_ms: int | None


MAX_ID = 2**63 - 1  # BIGINT: ids and principal ids past it fit no column
_MAX_PRUNE_HOURS = 100 * 366 * 24  # a hundred years back; further is before 1970 anyway


def _principal_id(tokenable_id: int | str) -> int:
    # the messages never repeat the value: a responder may paste a token where the id goes
    try:
        value = int(tokenable_id)
    except (TypeError, ValueError) as e:
        raise UsageError("tokenable id must be a whole number") from e
    if not 0 <= value <= MAX_ID:
        raise UsageError(f"tokenable id must be a whole number from 0 to {MAX_ID}")
    return value


def _check_text(value: str, what: str) -> str:
    """Refuse text that cannot be stored and published as UTF-8 (lone surrogates, NUL)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} holds characters that are not Unicode text") from e
    if "\0" in value:
        raise UsageError(f"{what} must not hold NUL characters")
    return value


def _owner_value(value: object) -> int | str:
    return value if isinstance(value, int) else str(value)


def _check_abilities(abilities: Sequence[str]) -> tuple[str, ...]:
    if isinstance(abilities, str):
        raise UsageError("abilities must be a list of strings, not one string")
    result = tuple(abilities)
    if len(result) > _MAX_ABILITIES:
        raise UsageError(f"a token holds at most {_MAX_ABILITIES} abilities")
    for ability in result:
        if not isinstance(ability, str) or not ability.strip():
            raise UsageError("an ability must be a non-empty string")
        if len(ability) > _MAX_ABILITY:
            raise UsageError(f"an ability is limited to {_MAX_ABILITY} characters")
        _check_text(ability, "an ability")
    return result


def live_condition(now: dt.datetime, expiration_minutes: int | None) -> sa.ColumnElement[bool]:
    """Rows of tokens that have not expired at ``now`` (per-token and global lifetime)."""
    condition = sa.or_(PAT.c.expires_at.is_(None), PAT.c.expires_at > now)
    if expiration_minutes:
        condition = condition & (PAT.c.created_at > now - dt.timedelta(minutes=expiration_minutes))
    return condition


def wildcard_token_ids(
    conn: sa.Connection, live: sa.ColumnElement[bool] | None = None
) -> list[int]:
    """Ids of tokens whose decoded ability list holds ``*`` (they carry every ability),
    however the JSON spells it (``"*"``, ``"\\u002a"``)."""
    query = sa.select(PAT.c.id, PAT.c.abilities).where(ability_candidates("*"))
    if live is not None:
        query = query.where(live)
    return [r.id for r in conn.execute(query).all() if "*" in decode_abilities(r.abilities)]


def ability_candidates(ability: str) -> sa.ColumnElement[bool]:
    """Rows whose abilities JSON may hold ``ability``: its raw text, or any escape (a JSON
    text without a backslash spells every string literally). Callers confirm on the
    decoded list, so a look-alike substring never counts."""
    raw = ability.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return PAT.c.abilities.like(f"%{raw}%", escape="\\") | PAT.c.abilities.like(
        "%\\\\%", escape="\\"
    )


class TokenStore:
    """Issues, lists and revokes tokens in the authoritative database."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        token_prefix: str = "",
        expiration_minutes: int | None = None,
    ) -> None:
        self.engine = engine
        self.token_prefix = token_prefix
        self.expiration_minutes = expiration_minutes
        self._dialect = engine.dialect.name
        self._id_column: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate_schema: bool = True) -> TokenStore:
        """A store on ``settings.database_url``, its schema migrated to the newest revision."""
        engine = create_engine(settings.database_url, settings.store_timezone)
        if migrate_schema:
            migrate(engine)
        return cls(
            engine,
            token_prefix=settings.token_prefix,
            expiration_minutes=settings.token_expiration_minutes,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def owner_id(self, tokenable_id: int | str) -> int | str:
        """A principal id as the table holds it: a whole number for Sanctum's BIGINT
        column, a string for Laravel's uuidMorphs/ulidMorphs (string or uuid) columns."""
        kind = self._id_kind()
        if kind == "integer":
            if isinstance(tokenable_id, str) and not tokenable_id.strip().isdigit():
                raise UsageError(
                    "tokenable id must be a whole number: this store's "
                    "tokenable_id column is an integer (string ids need Laravel's "
                    "uuidMorphs or ulidMorphs column)"
                )
            return _principal_id(tokenable_id)
        text = str(tokenable_id).strip()
        if not text or len(text) > 255:
            raise UsageError("tokenable id must be 1 to 255 characters")
        if kind == "uuid":
            try:
                return str(uuid.UUID(text))
            except ValueError as e:
                raise UsageError(
                    "tokenable id must be a UUID: this store's tokenable_id column is of type uuid"
                ) from e
        return canonical_principal_id(text)

    def owner_match(self, owner: int | str) -> sa.ColumnElement[bool]:
        """Rows whose tokenable_id is ``owner`` (from ``owner_id``): on a string column a
        UUID matches in any case (Laravel writes lower case; other tools print upper)."""
        if self._id_kind() == "string" and isinstance(owner, str) and _UUID.fullmatch(owner):
            return sa.func.lower(PAT.c.tokenable_id) == owner.lower()
        return cast(sa.ColumnElement[bool], PAT.c.tokenable_id == self.owner_value(owner))

    def owner_value(self, owner: int | str) -> Any:
        """``owner`` as a bound value typed like the table's tokenable_id column."""
        kind = self._id_kind()
        if kind == "integer":
            return owner
        text = sa.literal(str(owner), sa.String())
        if kind != "uuid" or self._dialect in triggers_mysql.DIALECTS:
            return text  # MariaDB's uuid type takes its text form as it is
        return sa.cast(text, sa.Uuid(as_uuid=False))

    def _id_kind(self) -> str:
        """integer, string or uuid: the type of the table's tokenable_id (read once)."""
        if self._id_column is None:
            columns = sa.inspect(self.engine).get_columns(PAT.name)
            kind = next(c["type"] for c in columns if c["name"] == "tokenable_id")
            self._id_column = (
                "uuid"
                if isinstance(kind, sa.Uuid)
                else "string"
                if isinstance(kind, sa.String)
                else "integer"
            )
        return self._id_column

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            with write_transaction(self.engine) as conn:
                yield conn
        except sa.exc.IntegrityError as e:
            raise StoreError(f"the token store refused the change: {e.orig}") from e
        except sa.exc.OperationalError as e:
            raise StoreError(f"the token store is unreachable: {e.orig}") from e

    def now_ms(self, conn: sa.Connection) -> int:
        """The database's clock in milliseconds (the clock the triggers stamp tokens with)."""
        if self._dialect == "postgresql":
            expr = "SELECT tokensync_now_ms()"
        elif self._dialect in triggers_mysql.DIALECTS:
            expr = f"SELECT {triggers_mysql.NOW_MS}"
        else:
            expr = (
                "SELECT CAST(strftime('%s','now') AS INTEGER) * 1000"
                " + CAST(substr(strftime('%f','now'), 4) AS INTEGER)"
            )
        return int(conn.execute(sa.text(expr)).scalar_one())

    @staticmethod
    def _last_seq(conn: sa.Connection, where: sa.ColumnElement[bool]) -> int:
        seq = conn.execute(sa.select(sa.func.max(OUTBOX.c.seq)).where(where)).scalar_one()
        return int(seq or 0)

    # --- issue --------------------------------------------------------------------------
    def issue(
        self,
        tokenable_type: str,
        tokenable_id: int | str,
        name: str,
        abilities: Sequence[str] = ("*",),
        expires_at: dt.datetime | None = None,
        *,
        audit: AuditContext | None = None,
    ) -> IssuedToken:
        """Create a token (Sanctum's ``createToken``); the plaintext is in the result only."""
        if not tokenable_type or len(tokenable_type) > 255:
            raise UsageError("tokenable type must be 1 to 255 characters")
        if not name or len(name) > _MAX_NAME:
            raise UsageError(f"token name must be 1 to {_MAX_NAME} characters")
        _check_text(tokenable_type, "tokenable type")
        _check_text(name, "token name")
        owner = self.owner_id(tokenable_id)
        granted = _check_abilities(abilities)
        self._check_abilities_fit(granted)
        if expires_at is not None and expires_at.tzinfo is not None:
            expires_at = expires_at.astimezone(dt.UTC).replace(tzinfo=None)
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            issued = self._insert(conn, tokenable_type, owner, name, granted, expires_at)
            audit_log.record(
                conn,
                marker,
                audit or AuditContext.python(),
                action="token.issue",
                seq=issued.seq,
                scope=f"token:{issued.id}",
                token_id=issued.id,
                principal=(tokenable_type, owner),
                detail={"name": name, "abilities": list(granted)},
            )
        log.info("token_issued", token_id=issued.id, seq=issued.seq, abilities=len(granted))
        return issued

    def _check_abilities_fit(self, granted: tuple[str, ...]) -> None:
        """On MySQL/MariaDB Sanctum's ``abilities`` column is TEXT: 65,535 bytes of JSON at
        most (SQLite and PostgreSQL have no such bound). Refused before anything is written."""
        if self._dialect not in triggers_mysql.DIALECTS:
            return
        size = len(encode_abilities(granted).encode("utf-8"))
        if size > _MYSQL_TEXT_BYTES:
            raise UsageError(
                f"the abilities take {size} bytes as JSON; the store's abilities column"
                f" (MySQL/MariaDB TEXT) holds at most {_MYSQL_TEXT_BYTES}"
            )

    def _insert(  # noqa: PLR0917 (private: the columns of one row)
        self,
        conn: sa.Connection,
        tokenable_type: str,
        owner: int | str,
        name: str,
        granted: tuple[str, ...],
        expires_at: dt.datetime | None,
    ) -> IssuedToken:
        plain = generate_token(self.token_prefix)
        token_hash = hash_token(plain)
        now = utcnow()
        inserted = conn.execute(
            PAT.insert().values(
                tokenable_type=tokenable_type,
                tokenable_id=self.owner_value(owner),
                name=name,
                token=token_hash,
                abilities=encode_abilities(granted),
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
        )
        token_id = cast(Any, inserted.inserted_primary_key)[0]  # RETURNING, or MySQL's last id
        seq = self._last_seq(conn, OUTBOX.c.token_id == token_id)
        return IssuedToken(
            id=token_id,
            tokenable_type=tokenable_type,
            tokenable_id=owner,
            name=name,
            abilities=granted,
            expires_at=expires_at,
            created_at=now,
            token_hash=token_hash,
            seq=seq,
            plain_text_token=format_token(token_id, plain),
        )

    # --- read ---------------------------------------------------------------------------
    @staticmethod
    def _info(row: sa.Row[tuple[object, ...]]) -> TokenInfo:
        m = row._mapping
        return TokenInfo(
            id=int(m["id"]),
            tokenable_type=str(m["tokenable_type"]),
            tokenable_id=_owner_value(m["tokenable_id"]),
            name=str(m["name"]),
            abilities=decode_abilities(m["abilities"]),
            last_used_at=m["last_used_at"],
            expires_at=m["expires_at"],
            created_at=m["created_at"],
            token_hash=str(m["token"]),
        )

    def list_tokens(self, tokenable_type: str, tokenable_id: int | str) -> list[TokenInfo]:
        """Every token of one principal, oldest first."""
        owner = self.owner_id(tokenable_id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(PAT)
                .where(PAT.c.tokenable_type == tokenable_type, self.owner_match(owner))
                .order_by(PAT.c.id)
            ).all()
        return [self._info(r) for r in rows]

    def get(self, token_id: int) -> TokenInfo:
        """One token by id, or NotFoundError."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(PAT).where(PAT.c.id == token_id)).first()
        if row is None:
            raise NotFoundError(f"no token with id {token_id}")
        return self._info(row)

    def find(self, token: str) -> TokenInfo | None:
        """Sanctum's ``findToken``: by id then constant-time hash compare, or by hash alone."""
        try:
            token_id, plain = parse_token(token)
        except UsageError:
            return None
        token_hash = hash_token(plain)
        with self.engine.connect() as conn:
            if token_id is None:
                row = conn.execute(sa.select(PAT).where(PAT.c.token == token_hash)).first()
            else:
                row = conn.execute(sa.select(PAT).where(PAT.c.id == token_id)).first()
        if row is None:
            return None
        info = self._info(row)
        return info if secrets.compare_digest(info.token_hash, token_hash) else None

    def find_hash(self, token_hash: str) -> TokenInfo | None:
        """The token whose SHA-256 (hex, as the table stores it) is ``token_hash``."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(PAT).where(PAT.c.token == token_hash.lower())).first()
        return None if row is None else self._info(row)

    def count_live(self, at: dt.datetime | None = None) -> int:
        """Tokens that exist and have not expired (what a region should hold as valid)."""
        now = at or utcnow()
        conditions = [sa.or_(PAT.c.expires_at.is_(None), PAT.c.expires_at > now)]
        if self.expiration_minutes:
            cutoff = now - dt.timedelta(minutes=self.expiration_minutes)
            conditions.append(PAT.c.created_at > cutoff)
        with self.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).where(*conditions)).scalar_one()
        return int(count)

    # --- revoke -------------------------------------------------------------------------
    def revoke_token(self, token_id: int, *, audit: AuditContext | None = None) -> Mutation:
        """Delete one token's row (Sanctum's way); regions keep a tombstone until expiry."""
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            row = conn.execute(
                sa.select(PAT.c.tokenable_type, PAT.c.tokenable_id).where(PAT.c.id == token_id)
            ).first()
            deleted = conn.execute(PAT.delete().where(PAT.c.id == token_id)).rowcount
            if not deleted or row is None:
                raise NotFoundError(f"no token with id {token_id}")
            seq = self._last_seq(conn, (OUTBOX.c.token_id == token_id) & (OUTBOX.c.op == "revoked"))
            audit_id = audit_log.record(
                conn,
                marker,
                audit or AuditContext.python(),
                action="token.revoke",
                seq=seq,
                scope=f"token:{token_id}",
                token_id=token_id,
                principal=(str(row.tokenable_type), _owner_value(row.tokenable_id)),
                removed=deleted,
            )
        log.info("token_revoked", token_id=token_id, seq=seq, audit_id=audit_id)
        return Mutation(seq=seq, removed=deleted, audit_id=audit_id)

    def revoke_token_text(self, token: str, *, audit: AuditContext | None = None) -> Mutation:
        """Revoke the token a caller presents (with or without ``id|``)."""
        info = self.find(token)
        if info is None:
            raise NotFoundError("no such token")
        return self.revoke_token(info.id, audit=audit)

    def _lock_writers(self, conn: sa.Connection) -> None:
        """Wait for every transaction writing token rows, and hold them off until commit.

        On PostgreSQL a row inserted before the epoch's time but committed after the
        delete would survive in the store while the regions deny it; SHARE ROW EXCLUSIVE
        waits for those writers (they hold ROW EXCLUSIVE) and serialises mass revocations.
        On MySQL/MariaDB ``_epoch_mysql`` picks the rows by a locking read, which waits
        for every uncommitted insert it meets (a row stamped before the epoch's time is in
        the index before the clock is read). On SQLite ``_tx`` holds the database's one
        write lock from its first statement (``BEGIN IMMEDIATE``), so nothing commits
        between what it reads and what it writes.
        """
        if self._dialect == "postgresql":
            conn.execute(sa.text(f"LOCK TABLE {PAT.name} IN SHARE ROW EXCLUSIVE MODE"))

    @staticmethod
    def covered(before_ms: int, now_ms: int | None = None) -> sa.ColumnElement[bool]:
        """Rows an epoch at ``before_ms`` revokes, judged as the regions judge them: by the
        trigger's issue time, else (rows older than tokensync, not yet backfilled) by
        ``created_at`` clamped to the store clock ``now_ms`` (a row that exists now was
        issued by now, whatever its created_at says; the backfill clamps alike); a row
        with neither counts as issued at 0, so every epoch covers it."""
        has_meta = sa.exists().where(META.c.token_id == PAT.c.id)
        issued_before = sa.exists().where(
            META.c.token_id == PAT.c.id, META.c.issued_at_ms < before_ms
        )
        if now_ms is not None and now_ms < before_ms:
            return issued_before | ~has_meta
        cutoff = dt.datetime.fromtimestamp(-(-before_ms // 1000), dt.UTC).replace(tzinfo=None)
        return issued_before | (
            ~has_meta & (PAT.c.created_at.is_(None) | (PAT.c.created_at < cutoff))
        )

    def _epoch(
        self, conn: sa.Connection, scope: str, before_ms: int, rows: sa.ColumnElement[bool] | None
    ) -> Mutation:
        """Move the epoch of ``scope`` forward and delete, without per-row events, exactly
        the rows of ``rows`` that the epoch covers (callers hold ``_lock_writers``)."""
        if self._dialect in triggers_mysql.DIALECTS:
            return self._epoch_mysql(conn, scope, before_ms, rows)
        now_ms = self.now_ms(conn)
        insert = (pg.insert if self._dialect == "postgresql" else sqlite.insert)(EPOCHS)
        stmt = insert.values(scope=scope, before_ms=before_ms, updated_at_ms=now_ms)
        stmt = stmt.on_conflict_do_update(
            index_elements=[EPOCHS.c.scope],
            set_={
                "before_ms": sa.func.greatest(EPOCHS.c.before_ms, stmt.excluded.before_ms)
                if self._dialect == "postgresql"
                else sa.func.max(EPOCHS.c.before_ms, stmt.excluded.before_ms),
                "updated_at_ms": now_ms,
            },
        )
        conn.execute(stmt)
        effective = int(
            conn.execute(sa.select(EPOCHS.c.before_ms).where(EPOCHS.c.scope == scope)).scalar_one()
        )
        removed = 0
        if rows is not None:
            marker = txmarks.mark(conn, txmarks.SUPPRESS)
            removed = conn.execute(
                PAT.delete().where(rows & self.covered(effective, now_ms))
            ).rowcount
            txmarks.unmark(conn, txmarks.SUPPRESS, marker)
        seq = self._last_seq(conn, (OUTBOX.c.kind == "epoch") & (OUTBOX.c.scope == scope))
        return Mutation(seq=seq, removed=removed, scope=scope, before_ms=effective)

    def _epoch_mysql(
        self, conn: sa.Connection, scope: str, before_ms: int, rows: sa.ColumnElement[bool] | None
    ) -> Mutation:
        """``_epoch`` on MySQL/MariaDB: ON DUPLICATE KEY UPDATE, and the rows to delete
        chosen first (a DELETE may not read tokensync_token_meta, which its trigger writes)."""
        now_ms = self.now_ms(conn)
        stmt = mysql.insert(EPOCHS).values(scope=scope, before_ms=before_ms, updated_at_ms=now_ms)
        conn.execute(
            stmt.on_duplicate_key_update(
                before_ms=sa.func.greatest(EPOCHS.c.before_ms, stmt.inserted.before_ms),
                updated_at_ms=now_ms,
            )
        )
        effective = int(
            conn.execute(sa.select(EPOCHS.c.before_ms).where(EPOCHS.c.scope == scope)).scalar_one()
        )
        removed = 0
        if rows is not None:
            ids = list(
                conn.execute(
                    sa.select(PAT.c.id)
                    .where(rows & self.covered(effective, now_ms))
                    .with_for_update()
                ).scalars()
            )
            marker = txmarks.mark(conn, txmarks.SUPPRESS)
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                removed += conn.execute(PAT.delete().where(PAT.c.id.in_(chunk))).rowcount
            txmarks.unmark(conn, txmarks.SUPPRESS, marker)
        seq = self._last_seq(conn, (OUTBOX.c.kind == "epoch") & (OUTBOX.c.scope == scope))
        return Mutation(seq=seq, removed=removed, scope=scope, before_ms=effective)

    def revoke_principal(
        self, tokenable_type: str, tokenable_id: int | str, *, audit: AuditContext | None = None
    ) -> Mutation:
        """Revoke every token of one principal issued until now: one epoch event."""
        owner = self.owner_id(tokenable_id)
        _check_text(tokenable_type, "tokenable type")
        with self._tx() as conn:
            self._lock_writers(conn)
            marker = audit_log.begin(conn)
            mutation = self._epoch(
                conn,
                principal_scope(tokenable_type, owner),
                self.now_ms(conn) + 1,
                (PAT.c.tokenable_type == tokenable_type) & self.owner_match(owner),
            )
            return self._audited(
                conn, marker, audit, "revoke.principal", mutation, (tokenable_type, owner)
            )

    def _audited(  # noqa: PLR0917 (private: one call per mutation)
        self,
        conn: sa.Connection,
        marker: int,
        audit: AuditContext | None,
        action: str,
        mutation: Mutation,
        principal: tuple[str, int | str] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Mutation:
        audit_id = audit_log.record(
            conn,
            marker,
            audit or AuditContext.python(),
            action=action,
            seq=mutation.seq,
            scope=mutation.scope,
            principal=principal,
            removed=mutation.removed,
            detail={**(detail or {}), "before_ms": mutation.before_ms}
            if mutation.before_ms is not None
            else detail,
        )
        return replace(mutation, audit_id=audit_id)

    def revoke_ability(
        self, ability: str, *, include_wildcard: bool = False, audit: AuditContext | None = None
    ) -> Mutation:
        """Revoke every token whose decoded ability list holds ``ability``: one epoch event.

        The column is matched on its decoded JSON, however it is spelled (PHP's
        ``json_encode`` escapes ``/`` and non-ASCII; other writers may not).

        With ``include_wildcard``, tokens holding ``*`` (which still carry ``ability``)
        are revoked too, one per-token revocation each (``Mutation.per_token``)."""
        (ability,) = _check_abilities([ability])
        maybe = ability_candidates(ability)
        with self._tx() as conn:
            self._lock_writers(conn)
            candidates = conn.execute(sa.select(PAT.c.id, PAT.c.abilities).where(maybe)).all()
            ids = [row.id for row in candidates if ability in decode_abilities(row.abilities)]
            rows = PAT.c.id.in_(ids) if ids else None
            marker = audit_log.begin(conn)
            per_token = 0
            if include_wildcard:
                live = live_condition(utcnow(), self.expiration_minutes)
                listed = set(ids)
                wildcard = [i for i in wildcard_token_ids(conn, live) if i not in listed]
                for chunk in range(0, len(wildcard), 500):
                    per_token += conn.execute(
                        PAT.delete().where(PAT.c.id.in_(wildcard[chunk : chunk + 500]))
                    ).rowcount
            mutation = self._epoch(conn, ability_scope(ability), self.now_ms(conn) + 1, rows)
            if per_token:
                mutation = replace(
                    mutation,
                    seq=max(mutation.seq, self._last_seq(conn, sa.true())),
                    removed=mutation.removed + per_token,
                    per_token=per_token,
                )
            return self._audited(
                conn,
                marker,
                audit,
                "revoke.ability",
                mutation,
                detail={"ability": ability, "include_wildcard": include_wildcard},
            )

    def revoke_all(
        self, before: dt.datetime | None = None, *, audit: AuditContext | None = None
    ) -> Mutation:
        """Revoke every token issued before ``before`` (default: now): one epoch event.

        ``before`` may not lie in the future (beyond ``FUTURE_SKEW_MS``): the epoch would
        deny tokens not yet issued, and epochs never move back."""
        with self._tx() as conn:
            self._lock_writers(conn)
            now_ms = self.now_ms(conn)
            before_ms = now_ms + 1 if before is None else to_ms(before)
            if before_ms > now_ms + FUTURE_SKEW_MS:
                when = dt.datetime.fromtimestamp(before_ms / 1000, dt.UTC)
                raise UsageError(
                    f"--before {when.isoformat()} is in the future: it would revoke tokens "
                    "not issued yet, and cannot be undone (use 'now' or an earlier time)"
                )
            marker = audit_log.begin(conn)
            mutation = self._epoch(conn, GLOBAL_SCOPE, before_ms, sa.true())
            return self._audited(conn, marker, audit, "revoke.all", mutation)

    def rotate(
        self, token_id: int, grace_seconds: int = 0, *, audit: AuditContext | None = None
    ) -> IssuedToken:
        """A new token like ``token_id`` (same owner, name, abilities, expiry); the old one
        is revoked now, or expires after ``grace_seconds``. One transaction."""
        if grace_seconds < 0:
            raise UsageError("grace must not be negative")
        old = self.get(token_id)
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            new = self._insert(
                conn, old.tokenable_type, old.tokenable_id, old.name, old.abilities, old.expires_at
            )
            if grace_seconds == 0:
                if not conn.execute(PAT.delete().where(PAT.c.id == token_id)).rowcount:
                    raise NotFoundError(f"no token with id {token_id}")
            else:
                until = utcnow() + dt.timedelta(seconds=grace_seconds)
                conn.execute(
                    PAT.update()
                    .where(PAT.c.id == token_id)
                    .where(sa.or_(PAT.c.expires_at.is_(None), PAT.c.expires_at > until))
                    .values(expires_at=until, updated_at=utcnow())
                )
            seq = max(new.seq, self._last_seq(conn, OUTBOX.c.token_id == token_id))
            audit_log.record(
                conn,
                marker,
                audit or AuditContext.python(),
                action="token.rotate",
                seq=seq,
                scope=f"token:{token_id}",
                token_id=token_id,
                principal=(old.tokenable_type, old.tokenable_id),
                detail={"replacement_id": new.id, "grace_seconds": grace_seconds},
            )
        return replace(new, seq=seq)

    def prune_expired(self, hours: int = 24, *, audit: AuditContext | None = None) -> Mutation:
        """Sanctum's ``sanctum:prune-expired --hours``: delete tokens expired ``hours`` ago."""
        if not 0 <= hours <= _MAX_PRUNE_HOURS:
            raise UsageError(f"hours must be a whole number from 0 to {_MAX_PRUNE_HOURS}")
        cutoff = utcnow() - dt.timedelta(hours=hours)
        condition = PAT.c.expires_at < cutoff
        if self.expiration_minutes:
            created = cutoff - dt.timedelta(minutes=self.expiration_minutes)
            condition = condition | (PAT.c.created_at < created)
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            before = self._last_seq(conn, sa.true())
            removed = conn.execute(PAT.delete().where(condition)).rowcount
            seq = self._last_seq(conn, sa.true()) if removed else before
            mutation = Mutation(seq=seq if removed else 0, removed=removed)
            mutation = self._audited(
                conn, marker, audit, "token.prune", mutation, detail={"hours": hours}
            )
        return replace(mutation, seq=seq)

    # --- outbox and regions -------------------------------------------------------------
    def position(self, seq: int) -> OutboxPosition:
        """Where outbox row ``seq`` went (partition and offset once published)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(OUTBOX).where(OUTBOX.c.seq == seq)).first()
        if row is None:
            raise NotFoundError(f"no outbox record with seq {seq}")
        m = row._mapping
        return OutboxPosition(
            seq=seq,
            kind=str(m["kind"]),
            key=str(m["scope"] if m["kind"] == "epoch" else m["token_hash"]),
            partition=m["kafka_partition"],
            offset=m["kafka_offset"],
            recorded_at_ms=int(m["recorded_at_ms"]),
            published_at_ms=m["published_at_ms"],
        )

    def add_region(self, region: Region, *, audit: AuditContext | None = None) -> None:
        """Register a region (name and Redis URL); a name is registered once."""
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            exists = conn.execute(
                sa.select(REGIONS.c.name).where(REGIONS.c.name == region.name)
            ).first()
            if exists is not None:
                raise UsageError(f"region {region.name!r} is already registered")
            conn.execute(
                REGIONS.insert().values(
                    name=region.name, redis_url=region.redis_url, added_at_ms=self.now_ms(conn)
                )
            )
            audit_log.record(
                conn,
                marker,
                audit or AuditContext.python(),
                action="region.add",
                seq=None,
                scope=f"region:{region.name}",
            )

    def remove_region(self, name: str, *, audit: AuditContext | None = None) -> None:
        """Forget a region, or NotFoundError."""
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            if not conn.execute(REGIONS.delete().where(REGIONS.c.name == name)).rowcount:
                raise NotFoundError(f"no region named {name!r}")
            audit_log.record(
                conn,
                marker,
                audit or AuditContext.python(),
                action="region.remove",
                seq=None,
                scope=f"region:{name}",
            )

    def regions(self) -> list[Region]:
        """The registered regions, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(REGIONS).order_by(REGIONS.c.name)).all()
        return [Region(r.name, r.redis_url) for r in rows]
