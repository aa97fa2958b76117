"""What the routes of the token store's HTTP API depend on: the app's context, the
caller's admin token and its abilities, the receipt wait, the audit context of a call,
and the one shape of every revocation route (``Revocation``, ``MassRevocation``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from producer import audit as audit_log
from producer.audit import AuditContext, attach_complete_receipt
from producer.authz import Action, holds, is_admin_principal, mint_denial
from producer.inputs import MAX_ID
from producer.receipts import receipt_timeout, wait_for_receipt
from producer.records import Mutation, TokenInfo
from producer.store import TokenStore
from producer.token_check import authenticated_token
from shared.errors import UsageError
from shared.settings import Settings
from shared.tokenformat import bearer_token
from shared.validator import Policy

__all__ = [
    "REQUIRED",
    "ApiContext",
    "ApiError",
    "Ctx",
    "Issuer",
    "MassRevocation",
    "Reader",
    "ReceiptReader",
    "RegionReader",
    "Revocation",
    "RevocationCall",
    "Revoker",
    "Rotator",
    "SeqPath",
    "TokenIdPath",
    "audit_context",
    "may_mint",
    "require",
    "require_mass_reason",
]

#: A token id or outbox seq in a path: a BIGINT (anything larger is a 422, not a 500).
TokenIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
SeqPath = Annotated[int, Path(ge=0, le=MAX_ID)]


class ApiError(Exception):
    """An HTTP error with a JSON body."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers or {}


@dataclass(frozen=True)
class ApiContext:
    """What every route reaches: the settings and the store (``app.state.tokensync``)."""

    settings: Settings
    store: TokenStore


def api_context(request: Request) -> ApiContext:
    """The app's ``ApiContext`` (a dependency: ``Ctx``)."""
    context: ApiContext = request.app.state.tokensync
    return context


Ctx = Annotated[ApiContext, Depends(api_context)]


def authenticate(ctx: ApiContext, token: str) -> TokenInfo | None:
    """The caller's token if the store accepts it now by the one rule set (regions' expiry
    and epoch rules, ``producer.token_check``), else None."""
    return authenticated_token(ctx.store, Policy.from_settings(ctx.settings), token)


#: Each ``require`` dependency and the abilities it admits (the OpenAPI names them).
REQUIRED: dict[Callable[..., TokenInfo], tuple[str, ...]] = {}


def require(*abilities: str) -> Callable[[Request, ApiContext], TokenInfo]:
    """A dependency admitting admin-principal tokens that hold one of ``abilities``."""

    def check(request: Request, ctx: Ctx) -> TokenInfo:
        # repeated headers joined as HTTP (and the gate) combine them: two tokens are none
        token = bearer_token(", ".join(request.headers.getlist("authorization")))
        challenge = {"WWW-Authenticate": 'Bearer realm="tokensync"'}
        if token is None:
            raise ApiError(401, "a bearer token is required", challenge)
        caller = authenticate(ctx, token)
        invalid = {"WWW-Authenticate": 'Bearer realm="tokensync", error="invalid_token"'}
        if caller is None:
            raise ApiError(401, "invalid token", invalid)
        if not is_admin_principal(caller.tokenable_type, ctx.settings.admin_types):
            raise ApiError(
                401, "not an admin token: the admin API admits admin principals only", invalid
            )
        if not any(holds(caller.abilities, a) for a in abilities):
            raise ApiError(403, f"the token lacks the ability {' or '.join(map(repr, abilities))}")
        return caller

    REQUIRED[check] = abilities
    return check


Issuer = Annotated[TokenInfo, Depends(require("tokens:issue"))]
Rotator = Annotated[TokenInfo, Depends(require("tokens:rotate"))]
Revoker = Annotated[TokenInfo, Depends(require("tokens:revoke"))]
Reader = Annotated[TokenInfo, Depends(require("tokens:read"))]
ReceiptReader = Annotated[
    TokenInfo, Depends(require("tokens:read", "tokens:revoke", "revocations:mass"))
]
RegionReader = Annotated[TokenInfo, Depends(require("regions:read"))]


def may_mint(  # noqa: PLR0917 (the caller and the token it would produce)
    ctx: ApiContext,
    caller: TokenInfo,
    action: Action,
    target_type: str,
    abilities: list[str],
    expires_at: dt.datetime | None,
) -> None:
    denial = mint_denial(
        caller.abilities,
        action,
        target_type,
        abilities,
        ctx.settings.admin_types,
        caller.expires_at,
        expires_at,
    )
    if denial is not None:
        raise ApiError(403, denial)


def receipt_timeout_query(timeout: float = 10.0) -> float:
    """The ``timeout`` query of a waiting mutation, checked before anything is committed
    (NaN or an infinity is a 422; the rest is clamped to what a receipt wait allows)."""
    return receipt_timeout(timeout)


ReceiptTimeout = Annotated[float, Depends(receipt_timeout_query)]


def mutation_answer(
    ctx: ApiContext, mutation: Mutation, wait: bool, timeout: float
) -> dict[str, Any]:
    body: dict[str, Any] = mutation.to_json()
    if wait:
        receipt = wait_for_receipt(ctx.settings, ctx.store, mutation.seq, timeout_s=timeout)
        body["receipt"] = receipt.to_json()
        attach_complete_receipt(ctx.store.engine, mutation.audit_id, receipt)
    return body


def audit_context(request: Request, caller: TokenInfo, reason: str | None) -> AuditContext:
    """The audit context of an API call: the caller's token and principal, the request id."""
    return AuditContext.api(
        caller.id,
        caller.tokenable_type,
        caller.tokenable_id,
        reason=reason,
        request_id=str(request.state.request_id),
    )


@dataclass(frozen=True)
class RevocationCall:
    """What every revocation route takes besides its body: the context, the caller, the
    request, and whether to wait (``wait``, ``timeout`` in the query) for the receipt."""

    ctx: ApiContext
    caller: TokenInfo
    request: Request
    wait: bool
    timeout: float

    def audit(self, reason: str | None) -> AuditContext:
        """The audit context of this call."""
        return audit_context(self.request, self.caller, reason)

    def answer(self, mutation: Mutation) -> dict[str, Any]:
        """The mutation as JSON, with its receipt if the caller waits for it."""
        return mutation_answer(self.ctx, mutation, self.wait, self.timeout)


def revocation_by(ability: str) -> Callable[..., RevocationCall]:
    """A dependency: a ``RevocationCall`` by a caller holding ``ability``."""
    check = require(ability)

    def revocation(
        request: Request,
        ctx: Ctx,
        *,
        caller: TokenInfo = Depends(check),  # noqa: B008 (a closure: no annotation can name it)
        timeout: ReceiptTimeout,
        wait: bool = False,
    ) -> RevocationCall:
        return RevocationCall(ctx, caller, request, wait, timeout)

    return revocation


Revocation = Annotated[RevocationCall, Depends(revocation_by("tokens:revoke"))]
MassRevocation = Annotated[RevocationCall, Depends(revocation_by("revocations:mass"))]


def require_mass_reason(reason: str | None, dry_run: bool) -> None:
    if not dry_run and not audit_log.has_reason(reason):
        raise UsageError("a mass revocation needs a reason (it is kept in the audit trail)")
