"""Checking a presented token against the store itself, by the one rule set.

The admin API authenticates its callers here, and the ``fallback`` policy
(``producer.fallback``) answers from here when a region is unavailable: the
token's row, its issue time and every epoch of the store's
``tokensync_epochs`` that applies to it, judged by ``shared.rules`` exactly as
regions judge them. So a row that survived a mass revocation (under READ
COMMITTED a row inserted before a revoke-all may commit after it) is revoked
here as it is in every region.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from producer.clock import db_now_ms, to_ms
from producer.models import EPOCHS, META, PAT
from producer.records import TokenInfo
from producer.store import TokenStore
from producer.tokens import decode_abilities
from shared.outcomes import Outcome, Principal, ValidationResult
from shared.rules import Mode, TokenRecord, epoch_scopes, judge
from shared.tokenformat import parse_presented
from shared.validator import Policy

__all__ = ["StoredToken", "authenticated_token", "check_stored_token", "read_stored_token"]


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token row as the rules need it, with the newest epoch the store holds for it."""

    record: TokenRecord
    epoch_ms: int
    info: TokenInfo
    store_now_ms: int
    """The store's clock once the row was read (the clock its rows and epochs are
    stamped with): the fallback judges the row with it, not with a validator's clock."""


def read_stored_token(store: TokenStore, token: str) -> StoredToken | None:
    """The row of a well-formed presented token (by id then constant-time hash compare,
    or by hash alone), its issue time and applicable epoch; None when there is none."""
    parsed = parse_presented(token)
    if parsed is None:
        return None
    query = sa.select(PAT, META.c.issued_at_ms).select_from(
        PAT.outerjoin(META, META.c.token_id == PAT.c.id)
    )
    if parsed.token_id is None:
        query = query.where(PAT.c.token == parsed.token_hash)
    else:
        query = query.where(PAT.c.id == parsed.token_id)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
        if row is None or not secrets.compare_digest(str(row.token), parsed.token_hash):
            return None
        abilities = decode_abilities(row.abilities)
        owner = row.tokenable_id if isinstance(row.tokenable_id, int) else str(row.tokenable_id)
        scopes = epoch_scopes(str(row.tokenable_type), owner, abilities)
        epoch = conn.execute(
            sa.select(sa.func.max(EPOCHS.c.before_ms)).where(EPOCHS.c.scope.in_(scopes))
        ).scalar_one()
        store_now_ms = db_now_ms(conn)
    created_ms = None if row.created_at is None else to_ms(row.created_at)
    principal = Principal(
        tokenable_type=str(row.tokenable_type),
        tokenable_id=str(row.tokenable_id),
        token_id=int(row.id),
        name=str(row.name),
        abilities=abilities,
        expires_at_ms=None if row.expires_at is None else to_ms(row.expires_at),
    )
    # The issue time the triggers publish: the insert's own stamp, else created_at but
    # never later than now (the row exists now, whatever clock wrote its created_at).
    issued_ms = (
        row.issued_at_ms
        if row.issued_at_ms is not None
        else None
        if created_ms is None
        else min(created_ms, store_now_ms)
    )
    info = TokenInfo(
        id=int(row.id),
        tokenable_type=str(row.tokenable_type),
        tokenable_id=owner,
        name=str(row.name),
        abilities=abilities,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        created_at=row.created_at,
        token_hash=str(row.token),
    )
    record = TokenRecord(principal, created_ms, None if issued_ms is None else int(issued_ms))
    return StoredToken(record, int(epoch or 0), info, store_now_ms)


def check_stored_token(
    store: TokenStore,
    policy: Policy,
    token: str,
    now_ms: int,
    *,
    required: Sequence[str] = (),
    mode: Mode = "all",
) -> ValidationResult:
    """The store's answer for ``token`` by the rules regions apply (source ``store``)."""
    if parse_presented(token) is None:
        return ValidationResult(Outcome.INVALID, reason="malformed", source="store")
    stored = read_stored_token(store, token)
    return judge(
        None if stored is None else stored.record,
        0 if stored is None else stored.epoch_ms,
        now_ms,
        required=tuple(required),
        mode=mode,
        expiration_minutes=policy.expiration_minutes,
        source="store",
    )


def authenticated_token(
    store: TokenStore, policy: Policy, token: str, *, clock: Callable[[], float] = time.time
) -> TokenInfo | None:
    """The row of ``token`` when the one rule set finds it valid now (exists, not expired
    by either lifetime, not covered by any epoch the store holds), else None. The admin
    API's caller check; abilities and the admin-principal rule come on top of it."""
    stored = read_stored_token(store, token)
    result = judge(
        None if stored is None else stored.record,
        0 if stored is None else stored.epoch_ms,
        int(clock() * 1000),
        expiration_minutes=policy.expiration_minutes,
        source="store",
    )
    if result.outcome is not Outcome.VALID or stored is None:
        return None
    return stored.info
