"""A small service protected by tokensync: ``uvicorn --factory examples.orders_service:create_app``.

It validates every request locally against its region's Redis (``TOKENSYNC_*``
settings, region from ``ORDERS_REGION``, default ``eu``):

- ``GET /orders`` needs ``orders:read``; ``POST /orders`` needs ``orders:write``;
- a browser may carry the token in the HttpOnly ``tokensync_token`` cookie (see
  ``POST /session``); then unsafe methods need ``X-XSRF-TOKEN`` equal to the
  ``XSRF-TOKEN`` cookie, which ``GET /sanctum/csrf-cookie`` sets;
- ``/healthz`` is public.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response

from shared.asgi import RouteRule, TokenAuthMiddleware, requires
from shared.settings import Settings
from shared.validator import AsyncValidator, Principal

ORDERS: list[dict[str, Any]] = []


def build(validator: AsyncValidator) -> FastAPI:
    """The service around an existing validator (tests pass their own)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await validator.close()  # its connections belong to the server's loop

    app = FastAPI(title="orders (tokensync example)", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/sanctum/csrf-cookie", status_code=204)
    def csrf_cookie(response: Response) -> None:
        response.set_cookie("XSRF-TOKEN", secrets.token_urlsafe(32), secure=True, samesite="lax")

    @app.post("/session", status_code=204)
    async def session(request: Request, response: Response) -> None:
        """Move a token into an HttpOnly cookie (a browser login would do this)."""
        token = (await request.json())["token"]
        response.set_cookie("tokensync_token", token, httponly=True, secure=True, samesite="lax")

    @app.get("/orders")
    def list_orders(
        principal: Annotated[Principal, Depends(requires("orders:read"))],
    ) -> dict[str, Any]:
        return {"owner": principal.tokenable_id, "orders": ORDERS}

    @app.post("/orders", status_code=201)
    def create_order(
        principal: Annotated[Principal, Depends(requires("orders:write"))],
    ) -> dict[str, Any]:
        order = {"id": len(ORDERS) + 1, "by": principal.tokenable_id}
        ORDERS.append(order)
        return order

    rules = [
        RouteRule("/healthz", public=True),
        RouteRule("/sanctum/csrf-cookie", public=True),
        RouteRule("/session", public=True),
        RouteRule("/orders", abilities=("orders:read",)),
    ]
    return TokenAuthMiddleware(app, validator, rules)  # type: ignore[return-value]


def create_app() -> FastAPI:
    """Factory for uvicorn: settings parsed here, once."""
    settings = Settings.load(os.environ)
    region = os.environ.get("ORDERS_REGION", "eu")
    validator = AsyncValidator.from_settings(settings, region)
    validator.enable_usage(settings.usage_interval_s)  # last_used_at without a write per request
    return build(validator)
