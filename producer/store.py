"""The token store: Sanctum's table plus tokensync's epochs, all changes via the outbox.

Every mutation is one SQL transaction; the outbox rows are written by the
database triggers (``producer.triggers``), and the method returns the seq of
the last outbox row its change produced. Plaintext tokens exist only in the
``IssuedToken`` returned to the caller.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite

from producer.models import Epoch, OutboxRow, PersonalAccessToken, RegionRow, Suppression, TokenMeta
from producer.schema import create_engine, migrate
from producer.tokens import (
    decode_abilities,
    encode_abilities,
    format_token,
    generate_token,
    hash_token,
    parse_token,
)
from shared.errors import NotFoundError, StoreError, UsageError
from shared.events import GLOBAL_SCOPE, ability_scope, principal_scope
from shared.settings import Region, Settings

__all__ = ["IssuedToken", "Mutation", "OutboxPosition", "TokenInfo", "TokenStore"]

PAT = cast(sa.Table, PersonalAccessToken.__table__)
OUTBOX = cast(sa.Table, OutboxRow.__table__)
EPOCHS = cast(sa.Table, Epoch.__table__)
META = cast(sa.Table, TokenMeta.__table__)
SUPPRESS = cast(sa.Table, Suppression.__table__)
REGIONS = cast(sa.Table, RegionRow.__table__)

_MAX_NAME = 4096
_MAX_ABILITY = 255
_MAX_ABILITIES = 256


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
    tokenable_id: int
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
    tokenable_id: int
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

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "removed": self.removed,
            "scope": self.scope,
            "before_ms": self.before_ms,
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


def _principal_id(tokenable_id: int | str) -> int:
    try:
        value = int(tokenable_id)
    except (TypeError, ValueError) as e:
        raise UsageError(f"tokenable id {tokenable_id!r} must be a whole number") from e
    if value < 0:
        raise UsageError("tokenable id must not be negative")
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

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate_schema: bool = True) -> TokenStore:
        """A store on ``settings.database_url``, its schema migrated to the newest revision."""
        engine = create_engine(settings.database_url)
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

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.IntegrityError as e:
            raise StoreError(f"the token store refused the change: {e.orig}") from e
        except sa.exc.OperationalError as e:
            raise StoreError(f"the token store is unreachable: {e.orig}") from e

    def now_ms(self, conn: sa.Connection) -> int:
        """The database's clock in milliseconds (the clock the triggers stamp tokens with)."""
        if self._dialect == "postgresql":
            expr = "SELECT tokensync_now_ms()"
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
    ) -> IssuedToken:
        """Create a token (Sanctum's ``createToken``); the plaintext is in the result only."""
        if not tokenable_type or len(tokenable_type) > 255:
            raise UsageError("tokenable type must be 1 to 255 characters")
        if not name or len(name) > _MAX_NAME:
            raise UsageError(f"token name must be 1 to {_MAX_NAME} characters")
        _check_text(tokenable_type, "tokenable type")
        _check_text(name, "token name")
        owner = _principal_id(tokenable_id)
        granted = _check_abilities(abilities)
        if expires_at is not None and expires_at.tzinfo is not None:
            expires_at = expires_at.astimezone(dt.UTC).replace(tzinfo=None)
        plain = generate_token(self.token_prefix)
        token_hash = hash_token(plain)
        now = utcnow()
        with self._tx() as conn:
            token_id = conn.execute(
                PAT.insert()
                .values(
                    tokenable_type=tokenable_type,
                    tokenable_id=owner,
                    name=name,
                    token=token_hash,
                    abilities=encode_abilities(granted),
                    expires_at=expires_at,
                    created_at=now,
                    updated_at=now,
                )
                .returning(PAT.c.id)
            ).scalar_one()
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
            tokenable_id=int(m["tokenable_id"]),
            name=str(m["name"]),
            abilities=decode_abilities(m["abilities"]),
            last_used_at=m["last_used_at"],
            expires_at=m["expires_at"],
            created_at=m["created_at"],
            token_hash=str(m["token"]),
        )

    def list_tokens(self, tokenable_type: str, tokenable_id: int | str) -> list[TokenInfo]:
        """Every token of one principal, oldest first."""
        owner = _principal_id(tokenable_id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(PAT)
                .where(PAT.c.tokenable_type == tokenable_type, PAT.c.tokenable_id == owner)
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
    def revoke_token(self, token_id: int) -> Mutation:
        """Delete one token's row (Sanctum's way); regions keep a tombstone until expiry."""
        with self._tx() as conn:
            deleted = conn.execute(PAT.delete().where(PAT.c.id == token_id)).rowcount
            if not deleted:
                raise NotFoundError(f"no token with id {token_id}")
            seq = self._last_seq(conn, (OUTBOX.c.token_id == token_id) & (OUTBOX.c.op == "revoked"))
        return Mutation(seq=seq, removed=deleted)

    def revoke_token_text(self, token: str) -> Mutation:
        """Revoke the token a caller presents (with or without ``id|``)."""
        info = self.find(token)
        if info is None:
            raise NotFoundError("no such token")
        return self.revoke_token(info.id)

    def _lock_writers(self, conn: sa.Connection) -> None:
        """Wait for every transaction writing token rows, and hold them off until commit.

        On PostgreSQL a row inserted before the epoch's time but committed after the
        delete would survive in the store while the regions deny it; SHARE ROW EXCLUSIVE
        waits for those writers (they hold ROW EXCLUSIVE) and serialises mass revocations.
        SQLite serialises writers by itself.
        """
        if self._dialect == "postgresql":
            conn.execute(sa.text(f"LOCK TABLE {PAT.name} IN SHARE ROW EXCLUSIVE MODE"))

    @staticmethod
    def _covered(before_ms: int) -> sa.ColumnElement[bool]:
        """Rows an epoch at ``before_ms`` revokes, judged as the regions judge them: by the
        trigger's issue time, else (rows older than tokensync) by ``created_at``; a row
        with neither counts as issued at 0, so every epoch covers it."""
        has_meta = sa.exists().where(META.c.token_id == PAT.c.id)
        issued_before = sa.exists().where(
            META.c.token_id == PAT.c.id, META.c.issued_at_ms < before_ms
        )
        cutoff = dt.datetime.fromtimestamp(-(-before_ms // 1000), dt.UTC).replace(tzinfo=None)
        return issued_before | (
            ~has_meta & (PAT.c.created_at.is_(None) | (PAT.c.created_at < cutoff))
        )

    def _epoch(
        self, conn: sa.Connection, scope: str, before_ms: int, rows: sa.ColumnElement[bool] | None
    ) -> Mutation:
        """Move the epoch of ``scope`` forward and delete, without per-row events, exactly
        the rows of ``rows`` that the epoch covers (callers hold ``_lock_writers``)."""
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
            marker = secrets.randbelow(2**31 - 1) + 1
            conn.execute(SUPPRESS.insert().values(id=marker))
            removed = conn.execute(PAT.delete().where(rows & self._covered(effective))).rowcount
            conn.execute(SUPPRESS.delete().where(SUPPRESS.c.id == marker))
        seq = self._last_seq(conn, (OUTBOX.c.kind == "epoch") & (OUTBOX.c.scope == scope))
        return Mutation(seq=seq, removed=removed, scope=scope, before_ms=effective)

    def revoke_principal(self, tokenable_type: str, tokenable_id: int | str) -> Mutation:
        """Revoke every token of one principal issued until now: one epoch event."""
        owner = _principal_id(tokenable_id)
        _check_text(tokenable_type, "tokenable type")
        with self._tx() as conn:
            self._lock_writers(conn)
            return self._epoch(
                conn,
                principal_scope(tokenable_type, owner),
                self.now_ms(conn) + 1,
                (PAT.c.tokenable_type == tokenable_type) & (PAT.c.tokenable_id == owner),
            )

    def revoke_ability(self, ability: str) -> Mutation:
        """Revoke every token whose decoded ability list holds ``ability``: one epoch event.

        The column is matched on its decoded JSON, however it is spelled (PHP's
        ``json_encode`` escapes ``/`` and non-ASCII; other writers may not)."""
        (ability,) = _check_abilities([ability])
        raw = ability.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # A JSON text without any backslash spells every string literally, so a row can
        # hold ``ability`` only if it holds its raw text or some escape.
        maybe = PAT.c.abilities.like(f"%{raw}%", escape="\\") | PAT.c.abilities.like(
            "%\\\\%", escape="\\"
        )
        with self._tx() as conn:
            self._lock_writers(conn)
            candidates = conn.execute(sa.select(PAT.c.id, PAT.c.abilities).where(maybe)).all()
            ids = [row.id for row in candidates if ability in decode_abilities(row.abilities)]
            rows = PAT.c.id.in_(ids) if ids else None
            return self._epoch(conn, ability_scope(ability), self.now_ms(conn) + 1, rows)

    def revoke_all(self, before: dt.datetime | None = None) -> Mutation:
        """Revoke every token issued before ``before`` (default: now): one epoch event."""
        with self._tx() as conn:
            self._lock_writers(conn)
            before_ms = self.now_ms(conn) + 1 if before is None else to_ms(before)
            return self._epoch(conn, GLOBAL_SCOPE, before_ms, sa.true())

    def rotate(self, token_id: int, grace_seconds: int = 0) -> IssuedToken:
        """A new token like ``token_id`` (same owner, name, abilities, expiry); the old one
        is revoked now, or expires after ``grace_seconds``."""
        if grace_seconds < 0:
            raise UsageError("grace must not be negative")
        old = self.get(token_id)
        new = self.issue(
            old.tokenable_type, old.tokenable_id, old.name, old.abilities, old.expires_at
        )
        if grace_seconds == 0:
            mutation = self.revoke_token(token_id)
            seq = mutation.seq
        else:
            until = utcnow() + dt.timedelta(seconds=grace_seconds)
            with self._tx() as conn:
                conn.execute(
                    PAT.update()
                    .where(PAT.c.id == token_id)
                    .where(sa.or_(PAT.c.expires_at.is_(None), PAT.c.expires_at > until))
                    .values(expires_at=until, updated_at=utcnow())
                )
                seq = self._last_seq(conn, OUTBOX.c.token_id == token_id)
        return IssuedToken(**{**new.__dict__, "seq": max(new.seq, seq)})

    def prune_expired(self, hours: int = 24) -> Mutation:
        """Sanctum's ``sanctum:prune-expired --hours``: delete tokens expired ``hours`` ago."""
        if hours < 0:
            raise UsageError("hours must not be negative")
        cutoff = utcnow() - dt.timedelta(hours=hours)
        condition = PAT.c.expires_at < cutoff
        if self.expiration_minutes:
            created = cutoff - dt.timedelta(minutes=self.expiration_minutes)
            condition = condition | (PAT.c.created_at < created)
        with self._tx() as conn:
            before = self._last_seq(conn, sa.true())
            removed = conn.execute(PAT.delete().where(condition)).rowcount
            seq = self._last_seq(conn, sa.true()) if removed else before
        return Mutation(seq=seq, removed=removed)

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

    def add_region(self, region: Region) -> None:
        """Register a region (name and Redis URL); a name is registered once."""
        with self._tx() as conn:
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

    def remove_region(self, name: str) -> None:
        """Forget a region, or NotFoundError."""
        with self._tx() as conn:
            if not conn.execute(REGIONS.delete().where(REGIONS.c.name == name)).rowcount:
                raise NotFoundError(f"no region named {name!r}")

    def regions(self) -> list[Region]:
        """The registered regions, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(REGIONS).order_by(REGIONS.c.name)).all()
        return [Region(r.name, r.redis_url) for r in rows]
