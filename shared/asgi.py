"""ASGI middleware for services: Sanctum-style token checks on every request.

The token comes from ``Authorization: Bearer`` or, for browsers, from an
HttpOnly cookie; a cookie-carried token needs, on unsafe methods, an
``X-XSRF-TOKEN`` header equal to the ``XSRF-TOKEN`` cookie (double submit, as
Sanctum's SPA mode). Answers: 401 with ``WWW-Authenticate: Bearer``, 403 for a
missing ability, 419 for a CSRF mismatch (Laravel's status), 503 when the
region is unavailable under the deny policy. Routes choose abilities and
policy by path prefix; a valid principal lands in ``scope["state"]["tokensync"]``.
"""

from __future__ import annotations

import dataclasses
import hmac
import inspect
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Literal

from shared.validator import AsyncValidator, Mode, Outcome, Principal, ValidationResult

__all__ = ["RouteRule", "TokenAuthMiddleware", "principal_of", "requires"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(frozen=True)
class RouteRule:
    """What requests under ``prefix`` need: abilities (all or any), the unavailable policy,
    or nothing at all (``public``)."""

    prefix: str
    abilities: tuple[str, ...] = ()
    mode: Mode = "all"
    on_unavailable: Literal["deny", "fallback"] | None = None
    public: bool = False


def _json(
    status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> Message:
    return {"status": status, "body": json.dumps(body).encode(), "headers": list(headers)}


async def _respond(send: Send, response: Message) -> None:
    headers = [(b"content-type", b"application/json"), *response["headers"]]
    await send({"type": "http.response.start", "status": response["status"], "headers": headers})
    await send({"type": "http.response.body", "body": response["body"]})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _cookies(scope: Scope) -> dict[str, str]:
    raw = _header(scope, b"cookie")
    if not raw:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


@dataclass
class TokenAuthMiddleware:
    """Validates the request's token against the region before the app sees it."""

    app: ASGIApp
    validator: AsyncValidator
    rules: Sequence[RouteRule] = ()
    cookie_name: str = "tokensync_token"
    csrf_cookie: str = "XSRF-TOKEN"
    csrf_header: bytes = b"x-xsrf-token"
    _validators: dict[str, AsyncValidator] = field(default_factory=dict, init=False)

    def _rule(self, path: str) -> RouteRule:
        matches = [r for r in self.rules if path.startswith(r.prefix)]
        return max(matches, key=lambda r: len(r.prefix)) if matches else RouteRule("/")

    def _validator_for(self, rule: RouteRule) -> AsyncValidator:
        if (
            rule.on_unavailable is None
            or rule.on_unavailable == self.validator.policy.on_unavailable
        ):
            return self.validator
        if rule.on_unavailable not in self._validators:
            policy = dataclasses.replace(self.validator.policy, on_unavailable=rule.on_unavailable)
            self._validators[rule.on_unavailable] = dataclasses.replace(
                self.validator, policy=policy
            )
        return self._validators[rule.on_unavailable]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self._rule(scope.get("path", "/"))
        if rule.public:
            await self.app(scope, receive, send)
            return
        token, from_cookie = self._token(scope)
        if token is None:
            await _respond(
                send,
                _json(
                    401,
                    {"error": "unauthenticated"},
                    [(b"www-authenticate", b'Bearer realm="tokensync"')],
                ),
            )
            return
        if (
            from_cookie
            and scope.get("method", "GET") not in SAFE_METHODS
            and not self._csrf_ok(scope)
        ):
            await _respond(send, _json(419, {"error": "CSRF token mismatch"}))
            return
        result = await self._validator_for(rule).validate(token, rule.abilities, rule.mode)
        if result.outcome is Outcome.VALID:
            scope.setdefault("state", {})["tokensync"] = result
            await self.app(scope, receive, send)
            return
        await _respond(send, _refusal(result))

    def _token(self, scope: Scope) -> tuple[str | None, bool]:
        header = _header(scope, b"authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip(), False
        cookie = _cookies(scope).get(self.cookie_name)
        return (cookie, True) if cookie else (None, False)

    def _csrf_ok(self, scope: Scope) -> bool:
        sent = _header(scope, self.csrf_header)
        expected = _cookies(scope).get(self.csrf_cookie)
        return bool(sent and expected) and hmac.compare_digest(str(sent), str(expected))


def _refusal(result: ValidationResult) -> Message:
    if result.outcome is Outcome.FORBIDDEN:
        return _json(403, {"error": "Invalid ability provided.", "missing": list(result.missing)})
    if result.outcome is Outcome.UNAVAILABLE:
        return _json(
            503,
            {
                "error": "token validation unavailable",
                "reason": result.reason,
                "freshness_s": result.freshness_s,
            },
            [(b"retry-after", b"1")],
        )
    return _json(
        401,
        {"error": "invalid token", "reason": result.reason},
        [(b"www-authenticate", b'Bearer realm="tokensync", error="invalid_token"')],
    )


def principal_of(scope_or_request: Any) -> Principal | None:
    """The principal the middleware admitted (from a scope dict or a Starlette request)."""
    state = (
        scope_or_request.get("state")
        if isinstance(scope_or_request, dict)
        else getattr(scope_or_request, "scope", {}).get("state")
    )
    result = (state or {}).get("tokensync")
    return result.principal if isinstance(result, ValidationResult) else None


def requires(*abilities: str, mode: Mode = "all") -> Callable[..., Principal]:
    """A FastAPI dependency: the principal, or 403 unless it has the abilities
    (``all``: Sanctum's ``abilities:`` middleware; ``any``: its ``ability:``)."""
    from fastapi import HTTPException, Request

    def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if principal is None:
            raise HTTPException(401, "unauthenticated", headers={"WWW-Authenticate": "Bearer"})
        missing = [a for a in abilities if not principal.can(a)]
        if (mode == "all" and missing) or (
            mode == "any" and abilities and len(missing) == len(abilities)
        ):
            raise HTTPException(403, "Invalid ability provided.")
        return principal

    # FastAPI reads the signature; with postponed annotations it would not find ``Request``.
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)],
        return_annotation=Principal,
    )
    return dependency
