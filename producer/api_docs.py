"""The admin API's OpenAPI document as ``/docs`` and ``/redoc`` show it: how to
authenticate (a bearer admin token) and each route's required ability."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from producer.api_deps import REQUIRED

__all__ = ["DESCRIPTION", "openapi_with_auth"]

#: The OpenAPI security scheme every admin route names (``/docs``: the Authorize button).
SCHEME = "adminToken"

DESCRIPTION = """Sanctum-compatible tokens, revoked in every region in milliseconds.

**Authentication.** Every route but `/healthz` and `/metrics` needs
`Authorization: Bearer <token>`, the token of an *admin principal* (a `tokenable_type`
listed in `TOKENSYNC_ADMIN_TYPES`, default `tokensync`) holding the route's ability
(each operation names it; `*` holds them all). Make the first one with the CLI:
`tokensync token issue --type tokensync --id 1 --name root --ability '*'`; on `/docs` press
**Authorize** and paste it. An end user's token gets 401 whatever its abilities."""


def _abilities_of(dependant: Dependant) -> tuple[str, ...]:
    """The abilities a route's ``require`` dependency admits (empty: an open route)."""
    for dependency in dependant.dependencies:
        found = REQUIRED.get(dependency.call) if dependency.call else None
        if found:
            return found
        if nested := _abilities_of(dependency):
            return nested
    return ()


def openapi_with_auth(app: FastAPI, router: APIRouter) -> dict[str, Any]:
    """FastAPI's schema plus the bearer scheme, named by every admin route of ``router``,
    and each admin route's required ability at the end of its description and summary."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schema.setdefault("components", {})["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "The token of an admin principal (`TOKENSYNC_ADMIN_TYPES`).",
        }
    }
    for route in router.routes:  # the API's own routes (FastAPI may nest them in app.routes)
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        abilities = _abilities_of(route.dependant)
        if not abilities:
            continue
        needed = " or ".join(f"`{a}`" for a in abilities)
        for method in route.methods or ():
            operation = schema["paths"][route.path_format][method.lower()]
            operation["security"] = [{SCHEME: []}]
            described = operation.get("description", "").rstrip()
            operation["description"] = (
                f"{described}\n\nRequired ability: {needed} (or `*`) on an admin token."
            ).lstrip()
            # the collapsed list of /docs shows summaries only: the ability goes there too
            summary = operation.get("summary") or route.name.replace("_", " ").title()
            operation["summary"] = f"{summary} (needs {' or '.join(abilities)})"
    app.openapi_schema = schema
    return schema
