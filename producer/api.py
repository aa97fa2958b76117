"""The token store's HTTP API (FastAPI): issue, revoke, rotate, list, receipts, regions.

Every route but ``/healthz`` and ``/metrics`` needs a bearer token from this
same store carrying the route's admin ability (``tokens:issue``,
``tokens:revoke``, ``tokens:read``, ``regions:read``); ``*`` grants all. The
API checks them the Sanctum way, against the database it owns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from producer.receipts import all_regions, wait_for_receipt
from producer.store import Mutation, TokenInfo, TokenStore, utcnow
from producer.token_check import authenticate_caller
from shared.errors import NotFoundError, StoreError, TokenSyncError, UsageError
from shared.keys import RedisKeys
from shared.region_state import read_region_state
from shared.settings import Settings
from shared.timeparse import parse_duration, parse_instant
from shared.validator import Policy

__all__ = ["ADMIN_ABILITIES", "create_app"]

ADMIN_ABILITIES = ("tokens:issue", "tokens:revoke", "tokens:read", "regions:read")


class IssueRequest(BaseModel):
    """Body of ``POST /v1/tokens``."""

    tokenable_type: str = Field(min_length=1, max_length=255)
    tokenable_id: int = Field(ge=0)
    name: str = Field(min_length=1, max_length=4096)
    abilities: list[str] = Field(default_factory=lambda: ["*"])
    expires_in: str | None = Field(default=None, description="seconds, or 90s/15m/2h/7d")


class RotateRequest(BaseModel):
    """Body of ``POST /v1/tokens/{id}/rotate``."""

    grace: str = "0"


class PrincipalRequest(BaseModel):
    """Body of ``POST /v1/revocations/principal``."""

    tokenable_type: str = Field(min_length=1, max_length=255)
    tokenable_id: int = Field(ge=0)


class AbilityRequest(BaseModel):
    """Body of ``POST /v1/revocations/ability``."""

    ability: str = Field(min_length=1, max_length=255)


class AllRequest(BaseModel):
    """Body of ``POST /v1/revocations/all``."""

    before: str = "now"


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


def require(ability: str) -> Callable[[Request, _Context], TokenInfo]:
    """A dependency admitting bearer tokens of this store that carry ``ability`` (or ``*``)."""

    def check(request: Request, ctx: Ctx) -> TokenInfo:
        return authenticate_caller(
            ctx.store,
            Policy.from_settings(ctx.settings),
            request.headers.get("authorization", ""),
            ability,
            refuse=ApiError,
        )

    return check


Issuer = Annotated[TokenInfo, Depends(require("tokens:issue"))]
Revoker = Annotated[TokenInfo, Depends(require("tokens:revoke"))]
Reader = Annotated[TokenInfo, Depends(require("tokens:read"))]
RegionReader = Annotated[TokenInfo, Depends(require("regions:read"))]
router = APIRouter()


def _mutation(ctx: _Context, mutation: Mutation, wait: bool, timeout: float) -> dict[str, Any]:
    body: dict[str, Any] = mutation.to_json()
    if wait:
        receipt = wait_for_receipt(ctx.settings, ctx.store, mutation.seq, timeout_s=timeout)
        body["receipt"] = receipt.to_json()
    return body


@router.get("/healthz", tags=["ops"])
def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness: the database answers."""
    return {"ok": True, "live_tokens": ctx.store.count_live()}


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
def metrics() -> PlainTextResponse:
    """Prometheus metrics."""
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/tokens", status_code=201, tags=["tokens"])
def issue(body: IssueRequest, ctx: Ctx, _caller: Issuer) -> dict[str, Any]:
    """Issue a token; the plaintext is in this response only."""
    expires_at = None
    if body.expires_in is not None:
        seconds = parse_duration(body.expires_in)
        if seconds <= 0:
            raise UsageError("expires_in must be positive")
        expires_at = utcnow() + dt.timedelta(seconds=seconds)
    issued = ctx.store.issue(
        body.tokenable_type, body.tokenable_id, body.name, body.abilities, expires_at
    )
    return issued.to_json()


@router.get("/v1/principals/{tokenable_type}/{tokenable_id}/tokens", tags=["tokens"])
def list_tokens(
    tokenable_type: str, tokenable_id: int, ctx: Ctx, _caller: Reader
) -> list[dict[str, Any]]:
    """A principal's tokens (hash prefixes, never plaintext)."""
    return [t.to_json() for t in ctx.store.list_tokens(tokenable_type, tokenable_id)]


@router.delete("/v1/tokens/{token_id}", tags=["revocation"])
def revoke_token(
    token_id: int, ctx: Ctx, _caller: Revoker, wait: bool = False, timeout: float = 10.0
) -> dict[str, Any]:
    """Revoke one token; ``wait=true`` returns the per-region receipt."""
    return _mutation(ctx, ctx.store.revoke_token(token_id), wait, timeout)


@router.post("/v1/tokens/{token_id}/rotate", status_code=201, tags=["tokens"])
def rotate(token_id: int, body: RotateRequest, ctx: Ctx, _caller: Issuer) -> dict[str, Any]:
    """A replacement token; the old one is revoked now or after ``grace``."""
    return ctx.store.rotate(token_id, int(parse_duration(body.grace))).to_json()


@router.post("/v1/tokens/prune", tags=["tokens"])
def prune(ctx: Ctx, _caller: Revoker, hours: int = 24) -> dict[str, Any]:
    """Delete tokens expired at least ``hours`` ago (Sanctum's prune-expired)."""
    mutation = ctx.store.prune_expired(hours)
    return {"seq": mutation.seq, "removed": mutation.removed}


@router.post("/v1/revocations/principal", tags=["revocation"])
def revoke_principal(
    body: PrincipalRequest, ctx: Ctx, _caller: Revoker, wait: bool = False, timeout: float = 10.0
) -> dict[str, Any]:
    """Revoke every token of a principal (one epoch event)."""
    mutation = ctx.store.revoke_principal(body.tokenable_type, body.tokenable_id)
    return _mutation(ctx, mutation, wait, timeout)


@router.post("/v1/revocations/ability", tags=["revocation"])
def revoke_ability(
    body: AbilityRequest, ctx: Ctx, _caller: Revoker, wait: bool = False, timeout: float = 10.0
) -> dict[str, Any]:
    """Revoke every token listing an ability (one epoch event)."""
    return _mutation(ctx, ctx.store.revoke_ability(body.ability), wait, timeout)


@router.post("/v1/revocations/all", tags=["revocation"])
def revoke_all(
    body: AllRequest, ctx: Ctx, _caller: Revoker, wait: bool = False, timeout: float = 10.0
) -> dict[str, Any]:
    """Revoke every token issued before a time (one epoch event)."""
    return _mutation(ctx, ctx.store.revoke_all(parse_instant(body.before)), wait, timeout)


@router.get("/v1/receipts/{seq}", tags=["revocation"])
def receipt(seq: int, ctx: Ctx, _caller: Reader, wait: float = 0.0) -> dict[str, Any]:
    """Per region: has it applied ``seq`` (waiting up to ``wait`` seconds)?"""
    timeout = min(max(wait, 0.0), 60.0)
    return wait_for_receipt(ctx.settings, ctx.store, seq, timeout_s=timeout).to_json()


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

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(TokenSyncError)
    async def _domain_error(_request: Request, exc: TokenSyncError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status_of(exc))

    app.include_router(router)
    return app
