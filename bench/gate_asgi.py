"""The baseline the gate must beat: the same ``/auth`` as an ASGI app under uvicorn.

``uvicorn --factory bench.gate_asgi:create_app --workers N`` (uvloop and httptools when
installed, as uvicorn[standard] picks them); settings from ``TOKENSYNC_*``, region from
``BENCH_GATE_REGION``. Same validator, near-cache and answers as ``gate.app``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from shared.settings import Settings
from shared.validator import AsyncValidator, Outcome

__all__ = ["create_app"]

Scope = MutableMapping[str, Any]
ASGI = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]

# The gate's /auth statuses (nginx auth_request passes 2xx, 401 and 403 on).
_STATUS = {
    Outcome.VALID: 200,
    Outcome.INVALID: 401,
    Outcome.FORBIDDEN: 403,
    Outcome.UNAVAILABLE: 503,
}


def create_app() -> ASGI:
    """An ASGI app answering ``/auth`` like the gate (status and principal headers)."""
    settings = Settings.load(os.environ)
    region = os.environ.get("BENCH_GATE_REGION", "eu")
    holder: dict[str, AsyncValidator] = {}

    def validator() -> AsyncValidator:
        if "v" not in holder:  # built in the worker process, after uvicorn's fork
            holder["v"] = AsyncValidator.from_settings(settings, region)
            holder["v"].enable_near_cache()
        return holder["v"]

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        token = ""
        for key, value in scope["headers"]:
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].decode("latin-1").strip()
        abilities = [
            part.split("=", 1)[1]
            for part in scope.get("query_string", b"").decode().split("&")
            if part.startswith("ability=")
        ]
        result = await validator().validate(token, abilities)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"0")]
        if result.outcome is Outcome.VALID and result.principal is not None:
            p = result.principal
            headers += [
                (b"x-tokensync-principal-type", p.tokenable_type.encode()),
                (b"x-tokensync-principal-id", p.tokenable_id.encode()),
                (b"x-tokensync-token-id", str(p.token_id).encode()),
                (b"x-tokensync-abilities", ",".join(p.abilities).encode()),
            ]
        status = _STATUS[result.outcome]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app
