"""Mass revocations: every token of a principal, of an ability, or issued before a time.

Each is one epoch event (``tokensync_epochs``, written by its trigger to the outbox) that
the regions apply as "issued before T is revoked"; the store deletes, without per-row
events, exactly the rows the epoch covers, judged as the regions judge them."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import sqlalchemy as sa

from producer import audit as audit_log
from producer import dialects
from producer.audit import AuditContext
from producer.clock import to_ms, utcnow
from producer.inputs import check_abilities, check_text
from producer.models import META, OUTBOX, PAT
from producer.records import Mutation
from producer.store_core import StoreCore
from producer.tokens import decode_abilities
from shared.errors import UsageError
from shared.events import GLOBAL_SCOPE, ability_scope, principal_scope
from shared.logs import get_logger

__all__ = [
    "FUTURE_SKEW_MS",
    "Epochs",
    "ability_candidates",
    "covered",
    "live_condition",
    "wildcard_token_ids",
]

#: How far past the database's clock ``revoke_all(before=...)`` may reach (clock skew):
#: an epoch in the future would deny tokens not issued yet, and epochs never move back.
FUTURE_SKEW_MS = 5_000

log = get_logger(__name__)


def _committed(action: str, mutation: Mutation) -> Mutation:
    """The canonical line of a committed mass revocation (one per call), then ``mutation``."""
    log.info(
        "tokens_revoked",
        action=action,
        scope=mutation.scope,
        seq=mutation.seq,
        removed=mutation.removed,
        per_token=mutation.per_token,
        audit_id=mutation.audit_id,
    )
    return mutation


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


def covered(before_ms: int, now_ms: int | None = None) -> sa.ColumnElement[bool]:
    """Rows an epoch at ``before_ms`` revokes, judged as the regions judge them: by the
    trigger's issue time, else (rows older than tokensync, not yet backfilled) by
    ``created_at`` clamped to the store clock ``now_ms`` (a row that exists now was
    issued by now, whatever its created_at says; the backfill clamps alike); a row
    with neither counts as issued at 0, so every epoch covers it."""
    has_meta = sa.exists().where(META.c.token_id == PAT.c.id)
    issued_before = sa.exists().where(META.c.token_id == PAT.c.id, META.c.issued_at_ms < before_ms)
    if now_ms is not None and now_ms < before_ms:
        return issued_before | ~has_meta
    cutoff = dt.datetime.fromtimestamp(-(-before_ms // 1000), dt.UTC).replace(tzinfo=None)
    return issued_before | (~has_meta & (PAT.c.created_at.is_(None) | (PAT.c.created_at < cutoff)))


class Epochs(StoreCore):
    """The store's mass revocations."""

    covered = staticmethod(covered)

    def _epoch(
        self, conn: sa.Connection, scope: str, before_ms: int, rows: sa.ColumnElement[bool] | None
    ) -> Mutation:
        """Move the epoch of ``scope`` forward and delete, without per-row events, exactly
        the rows of ``rows`` that the epoch covers (callers hold ``dialects.lock_writers``)."""
        now_ms = self.now_ms(conn)
        effective = dialects.raise_epoch(conn, scope, before_ms, now_ms)
        removed = 0
        if rows is not None:
            removed = dialects.delete_quietly(conn, rows & covered(effective, now_ms))
        seq = self._last_seq(conn, (OUTBOX.c.kind == "epoch") & (OUTBOX.c.scope == scope))
        return Mutation(seq=seq, removed=removed, scope=scope, before_ms=effective)

    def revoke_principal(
        self, tokenable_type: str, tokenable_id: int | str, *, audit: AuditContext | None = None
    ) -> Mutation:
        """Revoke every token of one principal issued until now: one epoch event."""
        owner = self.owner_id(tokenable_id)
        check_text(tokenable_type, "tokenable type")
        with self._tx() as conn:
            dialects.lock_writers(conn)
            marker = audit_log.begin(conn)
            mutation = self._epoch(
                conn,
                principal_scope(tokenable_type, owner),
                self.now_ms(conn) + 1,
                (PAT.c.tokenable_type == tokenable_type) & self.owner_match(owner),
            )
            done = self._audited_mutation(
                conn, marker, audit, "revoke.principal", mutation, (tokenable_type, owner)
            )
        return _committed("revoke.principal", done)

    def revoke_ability(
        self, ability: str, *, include_wildcard: bool = False, audit: AuditContext | None = None
    ) -> Mutation:
        """Revoke every token whose decoded ability list holds ``ability``: one epoch event.

        The column is matched on its decoded JSON, however it is spelled (PHP's
        ``json_encode`` escapes ``/`` and non-ASCII; other writers may not).

        With ``include_wildcard``, tokens holding ``*`` (which still carry ``ability``)
        are revoked too, one per-token revocation each (``Mutation.per_token``)."""
        (ability,) = check_abilities([ability])
        maybe = ability_candidates(ability)
        with self._tx() as conn:
            dialects.lock_writers(conn)
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
            done = self._audited_mutation(
                conn,
                marker,
                audit,
                "revoke.ability",
                mutation,
                detail={"ability": ability, "include_wildcard": include_wildcard},
            )
        return _committed("revoke.ability", done)

    def revoke_all(
        self, before: dt.datetime | None = None, *, audit: AuditContext | None = None
    ) -> Mutation:
        """Revoke every token issued before ``before`` (default: now): one epoch event.

        ``before`` may not lie in the future (beyond ``FUTURE_SKEW_MS``): the epoch would
        deny tokens not yet issued, and epochs never move back."""
        with self._tx() as conn:
            dialects.lock_writers(conn)
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
            done = self._audited_mutation(conn, marker, audit, "revoke.all", mutation)
        return _committed("revoke.all", done)
