"""Tokens one at a time: issue (Sanctum's ``createToken``), look up, list, revoke, rotate
and prune. Every mutation is one SQL transaction; the outbox rows are written by the
database triggers, and the method returns the seq of the last outbox row its change
produced. Plaintext tokens exist only in the ``IssuedToken`` returned to the caller."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import sqlalchemy as sa

from producer import audit as audit_log
from producer import dialects
from producer.audit import AuditContext
from producer.clock import utcnow
from producer.inputs import MAX_NAME, check_abilities, check_text
from producer.models import OUTBOX, PAT
from producer.principals import row_owner
from producer.records import IssuedToken, Mutation, TokenInfo
from producer.store_core import StoreCore
from producer.tokens import (
    decode_abilities,
    encode_abilities,
    format_token,
    generate_token,
    hash_token,
)
from shared.errors import NotFoundError, UsageError
from shared.logs import get_logger
from shared.tokenformat import parse_presented

__all__ = ["TokenRows"]

log = get_logger(__name__)

_MAX_PRUNE_HOURS = 100 * 366 * 24  # a hundred years back; further is before 1970 anyway


class TokenRows(StoreCore):
    """The store's operations on single token rows."""

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
        if not name or len(name) > MAX_NAME:
            raise UsageError(f"token name must be 1 to {MAX_NAME} characters")
        check_text(tokenable_type, "tokenable type")
        check_text(name, "token name")
        owner = self.owner_id(tokenable_id)
        granted = check_abilities(abilities)
        dialects.check_abilities_fit(self._dialect, granted)
        if expires_at is not None and expires_at.tzinfo is not None:
            expires_at = expires_at.astimezone(dt.UTC).replace(tzinfo=None)
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            issued = self._insert(conn, tokenable_type, owner, name, granted, expires_at)
            self._audited(
                conn,
                marker,
                audit,
                "token.issue",
                seq=issued.seq,
                scope=f"token:{issued.id}",
                token_id=issued.id,
                principal=(tokenable_type, owner),
                detail={"name": name, "abilities": list(granted)},
            )
        log.info("token_issued", token_id=issued.id, seq=issued.seq, abilities=len(granted))
        return issued

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
            tokenable_id=row_owner(m["tokenable_id"]),
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
        parsed = parse_presented(token)  # the validators' one reading of a presented token
        if parsed is None:
            return None
        token_id, token_hash = parsed.token_id, parsed.token_hash
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

    # --- revoke, rotate, prune ----------------------------------------------------------
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
            audit_id = self._audited(
                conn,
                marker,
                audit,
                "token.revoke",
                seq=seq,
                scope=f"token:{token_id}",
                token_id=token_id,
                principal=(str(row.tokenable_type), row_owner(row.tokenable_id)),
                removed=deleted,
            )
        log.info("token_revoked", token_id=token_id, seq=seq, audit_id=audit_id)
        return Mutation(seq=seq, removed=deleted, audit_id=audit_id)

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
            self._audited(
                conn,
                marker,
                audit,
                "token.rotate",
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
            mutation = self._audited_mutation(
                conn, marker, audit, "token.prune", mutation, detail={"hours": hours}
            )
        return replace(mutation, seq=seq)
