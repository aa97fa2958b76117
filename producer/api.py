"""The token store's HTTP API (FastAPI): issue, revoke, rotate, list, receipts, regions.

Every route but ``/healthz`` and ``/metrics`` needs a bearer token of an admin
principal (``TOKENSYNC_ADMIN_TYPES``, default ``tokensync``) carrying the route's
admin ability (see ``producer.authz``); an end-user token gets 401 whatever its
abilities. Issuing and rotating never give the caller more admin power than it holds.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from producer import audit as audit_log
from producer.audit import AuditContext, attach_complete_receipt
from producer.authz import Action, holds, is_admin_principal, mint_denial
from producer.body_limit import BodyLimit
from producer.receipts import all_regions, receipt_timeout, wait_for_receipt
from producer.store import MAX_ID, Mutation, TokenInfo, TokenStore, utcnow
from producer.token_check import authenticated_token
from shared.errors import NotFoundError, StoreError, TokenSyncError, UsageError
from shared.keys import RedisKeys
from shared.region_state import read_region_state
from shared.settings import Settings
from shared.timeparse import parse_duration, parse_instant
from shared.tokenformat import bearer_token
from shared.validator import Policy

Reason = Field(default=None, max_length=2000, description="Why (kept in the audit record).")
MassReason = Field(
    default=None, max_length=2000, description="Why (required: kept in the audit record)."
)

__all__ = ["create_app"]

#: The largest request body read (bytes): the largest valid request (a 4096-character
#: name and 256 abilities of 255 characters) fits, with room for JSON escapes.
MAX_BODY_BYTES = 128 * 1024

#: A token id or outbox seq in a path: a BIGINT (anything larger is a 422, not a 500).
TokenIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
SeqPath = Annotated[int, Path(ge=0, le=MAX_ID)]


class IssueRequest(BaseModel):
    """Body of ``POST /v1/tokens``."""

    tokenable_type: str = Field(min_length=1, max_length=255)
    tokenable_id: int | str = Field(description="a whole number, or a UUID/ULID on morph tables")
    name: str = Field(min_length=1, max_length=4096)
    abilities: list[str] = Field(default_factory=lambda: ["*"])
    expires_in: str | None = Field(default=None, description="seconds, or 90s/15m/2h/7d")
    reason: str | None = Reason


class RotateRequest(BaseModel):
    """Body of ``POST /v1/tokens/{id}/rotate``."""

    grace: str = "0"
    reason: str | None = Reason


class PrincipalRequest(BaseModel):
    """Body of ``POST /v1/revocations/principal``."""

    tokenable_type: str = Field(min_length=1, max_length=255)
    tokenable_id: int | str
    reason: str | None = MassReason
    dry_run: bool = False


class AbilityRequest(BaseModel):
    """Body of ``POST /v1/revocations/ability``."""

    ability: str = Field(min_length=1, max_length=255)
    include_wildcard: bool = False
    reason: str | None = MassReason
    dry_run: bool = False


class AllRequest(BaseModel):
    """Body of ``POST /v1/revocations/all``."""

    before: str = "now"
    reason: str | None = MassReason
    dry_run: bool = False


class TokenRef(BaseModel):
    """Exactly one of: the token or its bare secret, its SHA-256 (hex), its id."""

    token: str | None = Field(default=None, max_length=512)
    hash: str | None = Field(default=None, max_length=64)
    id: int | None = Field(default=None, ge=1, le=MAX_ID)


class RevokeRequest(TokenRef):
    """Body of ``POST /v1/tokens/revoke``."""

    reason: str | None = Reason


class ApiError(Exception):
    """An HTTP error with a JSON body."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers or {}


@dataclass(frozen=True)
class _Context:
    settings: Settings
    store: TokenStore


def _context(request: Request) -> _Context:
    context: _Context = request.app.state.tokensync
    return context


Ctx = Annotated[_Context, Depends(_context)]


def _authenticate(ctx: _Context, token: str) -> TokenInfo | None:
    """The caller's token if the store accepts it now by the one rule set (regions' expiry
    and epoch rules, ``producer.token_check``), else None."""
    return authenticated_token(ctx.store, Policy.from_settings(ctx.settings), token)


def require(*abilities: str) -> Callable[[Request, _Context], TokenInfo]:
    """A dependency admitting admin-principal tokens that hold one of ``abilities``."""

    def check(request: Request, ctx: Ctx) -> TokenInfo:
        # repeated headers joined as HTTP (and the gate) combine them: two tokens are none
        token = bearer_token(", ".join(request.headers.getlist("authorization")))
        challenge = {"WWW-Authenticate": 'Bearer realm="tokensync"'}
        if token is None:
            raise ApiError(401, "a bearer token is required", challenge)
        caller = _authenticate(ctx, token)
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

    return check


Issuer = Annotated[TokenInfo, Depends(require("tokens:issue"))]
Rotator = Annotated[TokenInfo, Depends(require("tokens:rotate"))]
Revoker = Annotated[TokenInfo, Depends(require("tokens:revoke"))]
MassRevoker = Annotated[TokenInfo, Depends(require("revocations:mass"))]
Reader = Annotated[TokenInfo, Depends(require("tokens:read"))]
ReceiptReader = Annotated[
    TokenInfo, Depends(require("tokens:read", "tokens:revoke", "revocations:mass"))
]
RegionReader = Annotated[TokenInfo, Depends(require("regions:read"))]


def _may_mint(  # noqa: PLR0917 (the caller and the token it would produce)
    ctx: _Context,
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


router = APIRouter()


def _receipt_timeout(timeout: float = 10.0) -> float:
    """The ``timeout`` query of a waiting mutation, checked before anything is committed
    (NaN or an infinity is a 422; the rest is clamped to what a receipt wait allows)."""
    return receipt_timeout(timeout)


ReceiptTimeout = Annotated[float, Depends(_receipt_timeout)]


def _mutation(ctx: _Context, mutation: Mutation, wait: bool, timeout: float) -> dict[str, Any]:
    body: dict[str, Any] = mutation.to_json()
    if wait:
        receipt = wait_for_receipt(ctx.settings, ctx.store, mutation.seq, timeout_s=timeout)
        body["receipt"] = receipt.to_json()
        attach_complete_receipt(ctx.store.engine, mutation.audit_id, receipt)
    return body


_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")


def _audit(request: Request, caller: TokenInfo, reason: str | None) -> AuditContext:
    """The audit context of an API call: the caller's token and principal, the request id."""
    return AuditContext.api(
        caller.id,
        caller.tokenable_type,
        caller.tokenable_id,
        reason=reason,
        request_id=str(request.state.request_id),
    )


def _mass_reason(reason: str | None, dry_run: bool) -> None:
    if not dry_run and not audit_log.has_reason(reason):
        raise UsageError("a mass revocation needs a reason (it is kept in the audit trail)")


@router.get("/healthz", tags=["ops"])
def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness: the database answers."""
    return {"ok": True, "live_tokens": ctx.store.count_live()}


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
def metrics() -> PlainTextResponse:
    """Prometheus metrics."""
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/tokens", status_code=201, tags=["tokens"])
def issue(body: IssueRequest, request: Request, ctx: Ctx, caller: Issuer) -> dict[str, Any]:
    """Issue a token; the plaintext is in this response only."""
    expires_at = None
    if body.expires_in is not None:
        seconds = parse_duration(body.expires_in)
        if seconds <= 0:
            raise UsageError("expires_in must be positive")
        expires_at = utcnow() + dt.timedelta(seconds=seconds)
    _may_mint(ctx, caller, Action.ISSUE, body.tokenable_type, body.abilities, expires_at)
    issued = ctx.store.issue(
        body.tokenable_type,
        body.tokenable_id,
        body.name,
        body.abilities,
        expires_at,
        audit=_audit(request, caller, body.reason),
    )
    return issued.to_json()


@router.get("/v1/principals/{tokenable_type}/{tokenable_id}/tokens", tags=["tokens"])
def list_tokens(
    tokenable_type: str, tokenable_id: str, ctx: Ctx, _caller: Reader
) -> list[dict[str, Any]]:
    """A principal's tokens (hash prefixes, never plaintext)."""
    return [t.to_json() for t in ctx.store.list_tokens(tokenable_type, tokenable_id)]


@router.delete("/v1/tokens/{token_id}", tags=["revocation"])
def revoke_token(  # noqa: PLR0917 (FastAPI: path, query and dependencies)
    token_id: TokenIdPath,
    request: Request,
    ctx: Ctx,
    caller: Revoker,
    timeout: ReceiptTimeout,
    wait: bool = False,
    reason: str | None = None,
) -> dict[str, Any]:
    """Revoke one token; ``wait=true`` returns the per-region receipt."""
    mutation = ctx.store.revoke_token(token_id, audit=_audit(request, caller, reason))
    return _mutation(ctx, mutation, wait, timeout)


@router.post("/v1/tokens/lookup", tags=["tokens"])
def lookup(body: TokenRef, ctx: Ctx, _caller: Reader) -> dict[str, Any]:
    """Find a token by its text or bare secret, its SHA-256 or its id; with the regions'
    answers for it now. The secret travels in the body, never in a URL."""
    from producer.lookup import find_token, regions_accepting

    info = find_token(ctx.store, text=body.token, token_hash=body.hash, token_id=body.id)
    regions = regions_accepting(ctx.settings, all_regions(ctx.settings, ctx.store), info)
    return {**info.to_json(), "regions": regions}


@router.post("/v1/tokens/revoke", tags=["revocation"])
def revoke_by_ref(  # noqa: PLR0917 (FastAPI: body, query and dependencies)
    body: RevokeRequest,
    request: Request,
    ctx: Ctx,
    caller: Revoker,
    timeout: ReceiptTimeout,
    wait: bool = False,
) -> dict[str, Any]:
    """Revoke the token named by its text or bare secret, its SHA-256 or its id."""
    from producer.lookup import find_token

    info = find_token(ctx.store, text=body.token, token_hash=body.hash, token_id=body.id)
    mutation = ctx.store.revoke_token(info.id, audit=_audit(request, caller, body.reason))
    return {**_mutation(ctx, mutation, wait, timeout), "token_id": info.id}


@router.post("/v1/tokens/{token_id}/rotate", status_code=201, tags=["tokens"])
def rotate(
    token_id: TokenIdPath, body: RotateRequest, request: Request, ctx: Ctx, caller: Rotator
) -> dict[str, Any]:
    """A replacement token; the old one is revoked now or after ``grace``."""
    target = ctx.store.get(token_id)
    _may_mint(
        ctx,
        caller,
        Action.ROTATE,
        target.tokenable_type,
        list(target.abilities),
        target.expires_at,  # the replacement keeps the old token's expiry
    )
    grace = int(parse_duration(body.grace))
    audit = _audit(request, caller, body.reason)
    return ctx.store.rotate(token_id, grace, audit=audit).to_json()


@router.post("/v1/tokens/prune", tags=["tokens"])
def prune(
    request: Request, ctx: Ctx, caller: Revoker, hours: Annotated[int, Query(ge=0)] = 24
) -> dict[str, Any]:
    """Delete tokens expired at least ``hours`` ago (Sanctum's prune-expired)."""
    mutation = ctx.store.prune_expired(hours, audit=_audit(request, caller, None))
    return {"seq": mutation.seq, "removed": mutation.removed}


@router.post("/v1/revocations/principal", tags=["revocation"])
def revoke_principal(  # noqa: PLR0917 (FastAPI: body, query and dependencies)
    body: PrincipalRequest,
    request: Request,
    ctx: Ctx,
    caller: MassRevoker,
    timeout: ReceiptTimeout,
    wait: bool = False,
) -> dict[str, Any]:
    """Revoke every token of a principal (one epoch event); ``dry_run`` only counts."""
    from producer.dryrun import count_principal

    if body.dry_run:
        return count_principal(ctx.store, body.tokenable_type, body.tokenable_id).to_json()
    _mass_reason(body.reason, body.dry_run)
    mutation = ctx.store.revoke_principal(
        body.tokenable_type, body.tokenable_id, audit=_audit(request, caller, body.reason)
    )
    return _mutation(ctx, mutation, wait, timeout)


@router.post("/v1/revocations/ability", tags=["revocation"])
def revoke_ability(  # noqa: PLR0917 (FastAPI: body, query and dependencies)
    body: AbilityRequest,
    request: Request,
    ctx: Ctx,
    caller: MassRevoker,
    timeout: ReceiptTimeout,
    wait: bool = False,
) -> dict[str, Any]:
    """Revoke every token listing an ability (one epoch event); ``include_wildcard`` also
    revokes live ``*`` tokens one by one; ``dry_run`` only counts."""
    from producer.dryrun import count_ability

    count = count_ability(ctx.store, body.ability)
    if body.dry_run:
        return count.to_json()
    _mass_reason(body.reason, body.dry_run)
    mutation = ctx.store.revoke_ability(
        body.ability,
        include_wildcard=body.include_wildcard,
        audit=_audit(request, caller, body.reason),
    )
    result = _mutation(ctx, mutation, wait, timeout)
    result["wildcard_still_live"] = 0 if body.include_wildcard else count.wildcard_total
    result["wildcard_by_type"] = count.wildcard_by_type
    return result


@router.post("/v1/revocations/all", tags=["revocation"])
def revoke_all(  # noqa: PLR0917 (FastAPI: body, query and dependencies)
    body: AllRequest,
    request: Request,
    ctx: Ctx,
    caller: MassRevoker,
    timeout: ReceiptTimeout,
    wait: bool = False,
) -> dict[str, Any]:
    """Revoke every token issued before a time, never a future one (one epoch event)."""
    from producer.dryrun import count_all

    instant = parse_instant(body.before)
    if body.dry_run:
        return count_all(ctx.store, instant).to_json()
    _mass_reason(body.reason, body.dry_run)
    mutation = ctx.store.revoke_all(instant, audit=_audit(request, caller, body.reason))
    return _mutation(ctx, mutation, wait, timeout)


@router.get("/v1/receipts/{seq}", tags=["revocation"])
def receipt(seq: SeqPath, ctx: Ctx, _caller: ReceiptReader, wait: float = 0.0) -> dict[str, Any]:
    """Per region: has it applied ``seq`` (waiting up to ``wait`` seconds, at most 60;
    NaN or an infinity is a 422)?"""
    timeout = receipt_timeout(wait)
    receipt = wait_for_receipt(ctx.settings, ctx.store, seq, timeout_s=timeout)
    if receipt.complete:
        for entry in audit_log.by_seq(ctx.store.engine, seq):
            if entry.action.startswith(("revoke.", "token.revoke")):
                attach_complete_receipt(ctx.store.engine, entry.id, receipt)
    return receipt.to_json()


@router.get("/v1/audit", tags=["audit"])
def audit(
    ctx: Ctx,
    _caller: Annotated[TokenInfo, Depends(require("audit:read"))],
    since: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The audit trail, oldest first (``since``: a duration like 1h, or a time)."""
    since_ms = audit_log.parse_since(since) if since else None
    limit = min(max(limit, 1), 10_000)
    entries = audit_log.read(
        ctx.store.engine, since_ms=since_ms, actor=actor, action=action, limit=limit
    )
    return [e.to_json() for e in entries]


@router.get("/v1/regions", tags=["regions"])
def regions(ctx: Ctx, _caller: RegionReader) -> list[dict[str, Any]]:
    """Every region with its readiness, freshness and applied offsets."""
    keys = RedisKeys(ctx.settings.redis_namespace)
    out = []
    for region in all_regions(ctx.settings, ctx.store):
        client = redis.Redis.from_url(region.redis_url, socket_timeout=1.0)
        try:
            out.append(read_region_state(client, keys, region.name).to_json())
        finally:
            client.close()
    return out


def _status_of(exc: TokenSyncError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UsageError):
        return 422
    return 503 if isinstance(exc, StoreError) else 500


def create_app(settings: Settings, store: TokenStore) -> FastAPI:
    """The API over ``store``; ``settings`` name the regions receipts ask."""
    app = FastAPI(
        title="tokensync token store",
        version="1",
        description="Sanctum-compatible tokens, revoked in every region in milliseconds.",
    )
    app.state.tokensync = _Context(settings, store)

    @app.middleware("http")
    async def _request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        response = await call_next(request)
        response.headers["X-Request-ID"] = str(request.state.request_id)
        return response

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why only, never the input: it may be a pasted token, or text that
        # cannot even be encoded (a lone surrogate would turn the 422 into a 500).
        detail = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": e.get("type"),
            }
            for e in exc.errors()
        ]
        where = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in detail)
        return JSONResponse(
            {"error": f"invalid request: {where}", "detail": detail}, status_code=422
        )

    @app.exception_handler(TokenSyncError)
    async def _domain_error(_request: Request, exc: TokenSyncError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status_of(exc))

    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # outermost: before any parsing
    return app
