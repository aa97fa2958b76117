"""ASGI middleware for services: Sanctum-style token checks on every request.

The token comes from ``Authorization: Bearer`` or, for browsers, from an
HttpOnly cookie; a cookie-carried token needs, on unsafe methods, an
``X-XSRF-TOKEN`` header equal to the ``XSRF-TOKEN`` cookie (double submit, as
Sanctum's SPA mode). Answers: 401 with ``WWW-Authenticate: Bearer``, 403 for a
missing ability, 419 for a CSRF mismatch (Laravel's status), 503 when the
region is unavailable under the deny policy. Websocket handshakes are checked
the same way (refused before accept: 401/403/503 through the ASGI denial-response
extension, else closed with 4401/4403/4503); a cookie-carried websocket token
also needs a same-origin (or listed) ``Origin``, since browsers send cookies on
cross-site handshakes. Routes choose abilities and policy by path prefix matched on
whole segments (``/session`` covers ``/session/x``, never ``/sessions``); a valid
principal lands in ``scope["state"]["tokensync"]``.
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
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.rules import missing_abilities
from shared.tokenformat import bearer_token
from shared.usage import CLIENT, client_fingerprint
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
    or nothing at all (``public``). ``prefix`` names whole path segments: ``/session``
    covers ``/session`` and ``/session/...``, not ``/sessions``."""

    prefix: str
    abilities: tuple[str, ...] = ()
    mode: Mode = "all"
    on_unavailable: Literal["deny", "fallback"] | None = None
    public: bool = False

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ConfigError(f"route rule prefix {self.prefix!r} must start with '/'")
        if _has_dot_segment(self.prefix):
            raise ConfigError(f"route rule prefix {self.prefix!r} must not hold '.' or '..'")

    @property
    def segments(self) -> tuple[str, ...]:
        """The prefix as path segments (empty ones dropped)."""
        return tuple(part for part in self.prefix.split("/") if part)


def _has_dot_segment(path: str) -> bool:
    return any(part in {".", ".."} for part in path.split("/"))


def _segments(path: str) -> tuple[str, ...]:
    """A request path as the router matches it: literal segments, empty ones dropped (dot
    segments stay literal, as Starlette routes them; a path holding them is never public)."""
    return tuple(part for part in path.split("/") if part)


def _route_path(scope: Scope) -> str:
    """The path as the app's router sees it (``root_path`` removed, as Starlette does)."""
    path = str(scope.get("path", "/") or "/")
    root = str(scope.get("root_path", "") or "")
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")) :] or "/"
    return path


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


def _combined(scope: Scope, name: bytes, separator: str = ", ") -> str | None:
    """Every value of a header sent more than once, joined as HTTP combines them (``, ``;
    ``; `` for cookies, which HTTP/2 sends one per header), as the gate's server reads them:
    a request naming two bearer tokens carries none."""
    values = [str(v.decode("latin-1")) for k, v in scope.get("headers", []) if k.lower() == name]
    return separator.join(values) if values else None


def _cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies, the first of a name winning (as the gate, PHP and Laravel read
    them: a cookie tossed in later from a sibling domain does not replace the first)."""
    raw = _combined(scope, b"cookie", "; ")
    jar: dict[str, str] = {}
    for part in (raw or "").split(";"):
        one: SimpleCookie = SimpleCookie()
        try:
            one.load(part)
        except CookieError:
            continue
        for name, morsel in one.items():
            jar.setdefault(name, morsel.value)
    return jar


@dataclass
class TokenAuthMiddleware:
    """Validates the request's token against the region before the app sees it."""

    app: ASGIApp
    validator: AsyncValidator
    rules: Sequence[RouteRule] = ()
    cookie_name: str = "tokensync_token"
    csrf_cookie: str = "XSRF-TOKEN"
    csrf_header: bytes = b"x-xsrf-token"
    websocket_origins: Sequence[str] = ()
    _validators: dict[str, AsyncValidator] = field(default_factory=dict, init=False)

    def _rule(self, path: str) -> RouteRule:
        """The most specific rule whose segments start the path's; a path with dot
        segments is never public (whatever resolves it, it must show a token)."""
        segments = _segments(path)
        matches = [r for r in self.rules if segments[: len(r.segments)] == r.segments]
        rule = max(matches, key=lambda r: len(r.segments)) if matches else RouteRule("/")
        if rule.public and _has_dot_segment(path):
            return RouteRule("/")
        return rule

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
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind not in {"http", "websocket"}:
            raise RuntimeError(f"TokenAuthMiddleware cannot check an ASGI {kind!r} scope")
        refusal = await self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await _refuse_websocket(scope, receive, send, refusal)
        else:
            await _respond(send, refusal)

    async def _check(self, scope: Scope) -> Message | None:
        """None when the request may reach the app (its principal then in the scope), or
        the HTTP refusal to send."""
        rule = self._rule(_route_path(scope))
        if rule.public:
            return None
        token, from_cookie = self._token(scope)
        if token is None:
            return _json(401, {"error": "unauthenticated"}, [_CHALLENGE])
        if from_cookie:
            if scope["type"] == "websocket" and not self._origin_ok(scope):
                return _json(403, {"error": "cross-origin websocket refused"})
            if (
                scope["type"] == "http"
                and scope.get("method", "GET") not in SAFE_METHODS
                and not self._csrf_ok(scope)
            ):
                return _json(419, {"error": "CSRF token mismatch"})
        validator = self._validator_for(rule)
        if validator.usage is None:
            result = await validator.validate(token, rule.abilities, rule.mode)
        else:  # usage counts per coarse client fingerprint (shared.usage)
            client = scope.get("client")
            mark = CLIENT.set(
                client_fingerprint(client[0] if client else None, _header(scope, b"user-agent"))
            )
            try:
                result = await validator.validate(token, rule.abilities, rule.mode)
            finally:
                CLIENT.reset(mark)
        if result.outcome is Outcome.VALID:
            scope.setdefault("state", {})["tokensync"] = result
            return None
        return _refusal(result)

    def _origin_ok(self, scope: Scope) -> bool:
        """A browser's websocket handshake carries ``Origin``; with a cookie token it must be
        this host's own or a listed one (no ``Origin``: not a browser, nothing to forge)."""
        origin = _header(scope, b"origin")
        if origin is None:
            return True
        if origin in self.websocket_origins:
            return True
        host = _header(scope, b"host")
        parsed = urlsplit(origin)
        return bool(host) and parsed.scheme in {"http", "https"} and parsed.netloc == host

    def _token(self, scope: Scope) -> tuple[str | None, bool]:
        token = bearer_token(_combined(scope, b"authorization"))
        if token is not None:
            return token, False
        cookie = _cookies(scope).get(self.cookie_name)
        return (cookie, True) if cookie else (None, False)

    def _csrf_ok(self, scope: Scope) -> bool:
        sent = _combined(scope, self.csrf_header)  # sent twice: joined, so it matches nothing
        expected = _cookies(scope).get(self.csrf_cookie)
        if not sent or not expected:
            return False
        # bytes: compare_digest refuses str beyond ASCII (a header may carry any octet)
        return hmac.compare_digest(
            sent.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
        )


_CHALLENGE = (b"www-authenticate", b'Bearer realm="tokensync"')
_CLOSE_REASONS = {401: "unauthenticated", 403: "forbidden", 503: "unavailable"}


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, refusal: Message) -> None:
    """Refuse a handshake before accept: the HTTP answer itself where the server offers the
    denial-response extension, else a close with 4000 + the HTTP status."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client left already
    status = int(refusal["status"])
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"application/json"), *refusal["headers"]]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": refusal["body"]})
        return
    reason = _CLOSE_REASONS.get(status, "refused")
    await send({"type": "websocket.close", "code": 4000 + status, "reason": reason})


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
        if missing_abilities(principal, abilities, mode):
            raise HTTPException(403, "Invalid ability provided.")
        return principal

    # FastAPI reads the signature; with postponed annotations it would not find ``Request``.
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)],
        return_annotation=Principal,
    )
    return dependency
