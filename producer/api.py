"""The token store's HTTP API (FastAPI): issue, revoke, rotate, list, receipts, regions.

Every route but ``/healthz`` and ``/metrics`` needs a bearer token of an admin
principal (``TOKENSYNC_ADMIN_TYPES``, default ``tokensync``) carrying the route's
admin ability (see ``producer.authz``); an end-user token gets 401 whatever its
abilities. Issuing and rotating never give the caller more admin power than it holds.

Over 350 lines (just): one short function per route, so every route of the admin API is
read in one place; the request bodies are ``api_bodies``, the dependencies ``api_deps``,
the offline docs ``api_docs``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from producer import audit as audit_log
from producer.api_bodies import (
    AbilityRequest,
    AllRequest,
    IssueRequest,
    PrincipalRequest,
    RevokeRequest,
    RotateRequest,
    TokenRef,
)
from producer.api_deps import (
    ApiContext,
    ApiError,
    Ctx,
    Issuer,
    MassRevocation,
    Reader,
    ReceiptReader,
    RegionReader,
    Revocation,
    Revoker,
    Rotator,
    SeqPath,
    TokenIdPath,
    audit_context,
    may_mint,
    require,
    require_mass_reason,
)
from producer.api_docs import DESCRIPTION, openapi_with_auth
from producer.audit import attach_complete_receipt
from producer.authz import Action
from producer.body_limit import BodyLimit
from producer.clock import utcnow
from producer.receipts import all_regions, receipt_timeout, wait_for_receipt
from producer.records import TokenInfo
from producer.store import TokenStore
from shared.errors import NotFoundError, StoreError, TokenSyncError, UsageError
from shared.keys import RedisKeys
from shared.region_state import read_region_state
from shared.settings import Settings
from shared.timeparse import parse_duration, parse_instant

__all__ = ["create_app"]

#: The largest request body read (bytes): the largest valid request (a 4096-character
#: name and 256 abilities of 255 characters) fits, with room for JSON escapes.
MAX_BODY_BYTES = 128 * 1024

router = APIRouter()


_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")


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
    may_mint(ctx, caller, Action.ISSUE, body.tokenable_type, body.abilities, expires_at)
    issued = ctx.store.issue(
        body.tokenable_type,
        body.tokenable_id,
        body.name,
        body.abilities,
        expires_at,
        audit=audit_context(request, caller, body.reason),
    )
    return issued.to_json()


@router.get("/v1/principals/{tokenable_type}/{tokenable_id}/tokens", tags=["tokens"])
def list_tokens(
    tokenable_type: str, tokenable_id: str, ctx: Ctx, _caller: Reader
) -> list[dict[str, Any]]:
    """A principal's tokens (hash prefixes, never plaintext)."""
    return [t.to_json() for t in ctx.store.list_tokens(tokenable_type, tokenable_id)]


@router.delete("/v1/tokens/{token_id}", tags=["revocation"])
def revoke_token(
    token_id: TokenIdPath, revocation: Revocation, reason: str | None = None
) -> dict[str, Any]:
    """Revoke one token; ``wait=true`` returns the per-region receipt."""
    store = revocation.ctx.store
    return revocation.answer(store.revoke_token(token_id, audit=revocation.audit(reason)))


@router.post("/v1/tokens/lookup", tags=["tokens"])
def lookup(body: TokenRef, ctx: Ctx, _caller: Reader) -> dict[str, Any]:
    """Find a token by its text or bare secret, its SHA-256 or its id; with the regions'
    answers for it now. The secret travels in the body, never in a URL."""
    from producer.lookup import find_token, regions_accepting

    info = find_token(ctx.store, text=body.token, token_hash=body.hash, token_id=body.id)
    regions = regions_accepting(ctx.settings, all_regions(ctx.settings, ctx.store), info)
    return {**info.to_json(), "regions": regions}


@router.post("/v1/tokens/revoke", tags=["revocation"])
def revoke_by_ref(body: RevokeRequest, revocation: Revocation) -> dict[str, Any]:
    """Revoke the token named by its text or bare secret, its SHA-256 or its id."""
    from producer.lookup import find_token

    store = revocation.ctx.store
    info = find_token(store, text=body.token, token_hash=body.hash, token_id=body.id)
    mutation = store.revoke_token(info.id, audit=revocation.audit(body.reason))
    return {**revocation.answer(mutation), "token_id": info.id}


@router.post("/v1/tokens/{token_id}/rotate", status_code=201, tags=["tokens"])
def rotate(
    token_id: TokenIdPath, body: RotateRequest, request: Request, ctx: Ctx, caller: Rotator
) -> dict[str, Any]:
    """A replacement token; the old one is revoked now or after ``grace``."""
    target = ctx.store.get(token_id)
    may_mint(
        ctx,
        caller,
        Action.ROTATE,
        target.tokenable_type,
        list(target.abilities),
        target.expires_at,  # the replacement keeps the old token's expiry
    )
    grace = int(parse_duration(body.grace))
    audit = audit_context(request, caller, body.reason)
    return ctx.store.rotate(token_id, grace, audit=audit).to_json()


@router.post("/v1/tokens/prune", tags=["tokens"])
def prune(
    request: Request, ctx: Ctx, caller: Revoker, hours: Annotated[int, Query(ge=0)] = 24
) -> dict[str, Any]:
    """Delete tokens expired at least ``hours`` ago (Sanctum's prune-expired)."""
    mutation = ctx.store.prune_expired(hours, audit=audit_context(request, caller, None))
    return {"seq": mutation.seq, "removed": mutation.removed}


@router.post("/v1/revocations/principal", tags=["revocation"])
def revoke_principal(body: PrincipalRequest, revocation: MassRevocation) -> dict[str, Any]:
    """Revoke every token of a principal (one epoch event); ``dry_run`` only counts."""
    from producer.dryrun import count_principal

    store = revocation.ctx.store
    if body.dry_run:
        return count_principal(store, body.tokenable_type, body.tokenable_id).to_json()
    require_mass_reason(body.reason, body.dry_run)
    mutation = store.revoke_principal(
        body.tokenable_type, body.tokenable_id, audit=revocation.audit(body.reason)
    )
    return revocation.answer(mutation)


@router.post("/v1/revocations/ability", tags=["revocation"])
def revoke_ability(body: AbilityRequest, revocation: MassRevocation) -> dict[str, Any]:
    """Revoke every token listing an ability (one epoch event); ``include_wildcard`` also
    revokes live ``*`` tokens one by one; ``dry_run`` only counts."""
    from producer.dryrun import count_ability

    store = revocation.ctx.store
    count = count_ability(store, body.ability)
    if body.dry_run:
        return count.to_json()
    require_mass_reason(body.reason, body.dry_run)
    mutation = store.revoke_ability(
        body.ability,
        include_wildcard=body.include_wildcard,
        audit=revocation.audit(body.reason),
    )
    result = revocation.answer(mutation)
    result["wildcard_still_live"] = 0 if body.include_wildcard else count.wildcard_total
    result["wildcard_by_type"] = count.wildcard_by_type
    return result


@router.post("/v1/revocations/all", tags=["revocation"])
def revoke_all(body: AllRequest, revocation: MassRevocation) -> dict[str, Any]:
    """Revoke every token issued before a time, never a future one (one epoch event)."""
    from producer.dryrun import count_all

    instant = parse_instant(body.before)
    store = revocation.ctx.store
    if body.dry_run:
        return count_all(store, instant).to_json()
    require_mass_reason(body.reason, body.dry_run)
    return revocation.answer(store.revoke_all(instant, audit=revocation.audit(body.reason)))


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


@router.get("/v1/findings", tags=["audit"])
def findings(
    ctx: Ctx,
    _caller: Annotated[TokenInfo, Depends(require("audit:read"))],
    since: str = "1d",
    detector: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """What the watch's detectors found, oldest first (``since``: 90s, 1h, 7d, or a time)."""
    from producer.detectors import read_findings

    found = read_findings(
        ctx.store.engine,
        since_ms=audit_log.parse_since(since),
        detector=detector,
        limit=min(max(limit, 1), 10_000),
    )
    return [f.to_json() for f in found]


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
    """The API over ``store``; ``settings`` name the regions receipts ask. ``/docs`` and
    ``/redoc`` serve Swagger UI and ReDoc from the installed package (no CDN)."""
    app = FastAPIOffline(
        title="tokensync token store",
        version="1",
        description=DESCRIPTION,
        static_url="/docs-static",
        # no badge from the public validator: the page reaches this API only
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )
    app.openapi = lambda: openapi_with_auth(app, router)  # type: ignore[method-assign]
    app.state.tokensync = ApiContext(settings, store)

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
