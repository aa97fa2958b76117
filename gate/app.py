"""What the gate answers: ``/auth`` for proxies, ``/introspect`` (RFC 7662), health, metrics.

Pure request-to-response logic over an ``AsyncValidator`` (the HTTP protocol lives in
``gate.http``; requests, responses and refusals in ``gate.messages``). ``/auth`` speaks
RFC 6750 challenges; ``/introspect`` requires HTTP Basic client authentication against
``TOKENSYNC_GATE_CLIENTS``. Nothing here logs or echoes a token: log lines carry the
token id and outcome only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs

import structlog

from gate.messages import (
    SAFE_METHODS,
    BadInputError,
    GateRequest,
    GateResponse,
    abilities_from,
    abilities_header,
    bad_request,
    header_value,
    invalid_request,
    json_response,
    parse_cookies,
    parse_mode,
    refusal,
    scope_of,
)
from gate.metrics import GateMetrics
from shared.keys import TokenField
from shared.outcomes import Outcome, ValidationResult
from shared.tokenformat import bearer_token, checksum
from shared.usage import CLIENT, proxied_client
from shared.validator import AsyncValidator, Mode, Policy

__all__ = ["Gate", "GateRequest", "GateResponse"]

log = structlog.get_logger("gate")


@dataclass
class Gate:
    """The gate of one region: request in, response out."""

    region: str
    validator: AsyncValidator
    metrics: GateMetrics
    clients: Mapping[str, str] = field(default_factory=dict, repr=False)
    cookie_name: str = "tokensync_token"
    csrf_cookie: str = "XSRF-TOKEN"
    expiration_minutes: int | None = None
    _probe: str = field(init=False, repr=False)
    _health: AsyncValidator = field(init=False, repr=False)
    _asked: dict[tuple[bool, str, str | None, str | None], tuple[tuple[str, ...], Mode]] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        entropy = "".join(secrets.choice(string.ascii_letters) for _ in range(40))
        self._probe = entropy + checksum(entropy)  # well-formed, never issued
        deny: Policy = replace(self.validator.policy, on_unavailable="deny")
        self._health = replace(self.validator, policy=deny, near_cache=None, usage=None)

    # --- dispatch -----------------------------------------------------------------------
    async def handle(self, request: GateRequest) -> GateResponse:
        """Answer one request (never raises for bad input)."""
        path = request.path
        if path == "/auth" or path.startswith("/auth/"):
            return await self.auth(request)
        if path == "/introspect":
            return await self.introspect(request)
        if path == "/healthz":
            return await self.healthz()
        if path == "/metrics":
            return GateResponse(
                200,
                body=self.metrics.render(self.region),
                content_type="text/plain; version=0.0.4",
            )
        return json_response(
            404,
            {"error": "not_found", "routes": ["/auth", "/introspect", "/healthz", "/metrics"]},
            "not_found",
        )

    # --- /auth --------------------------------------------------------------------------
    def _requirements(self, request: GateRequest) -> tuple[tuple[str, ...], Mode]:
        """What the request requires, remembered per distinct question (proxies ask a
        handful of them over and over)."""
        headers = request.headers
        key = (
            request.path == "/auth",
            request.query,
            headers.get("x-tokensync-abilities"),
            headers.get("x-tokensync-mode"),
        )
        known = self._asked.get(key)
        if known is None:
            known = self._parse_requirements(request)
            if len(self._asked) >= 4096:
                self._asked.clear()
            self._asked[key] = known
        return known

    def _parse_requirements(self, request: GateRequest) -> tuple[tuple[str, ...], Mode]:
        """Abilities and mode: the query of ``/auth`` exactly (the URL the proxy was
        configured with) wins; else ``X-Tokensync-Abilities`` / ``X-Tokensync-Mode``.
        Under ``/auth/...`` (Envoy's path prefix: the rest is the client's path) only the
        headers count."""
        if request.path == "/auth" and request.query:
            params = parse_qs(request.query, keep_blank_values=True)
            if "ability" in params or "mode" in params:
                mode_values = params.get("mode", [])
                return abilities_from(params.get("ability", [])), parse_mode(
                    mode_values[-1] if mode_values else None
                )
        header = request.headers.get("x-tokensync-abilities")
        return abilities_from([header] if header else []), parse_mode(
            request.headers.get("x-tokensync-mode")
        )

    def _unsafe(self, request: GateRequest) -> bool:
        """Whether any method the proxy forwarded is unsafe (a spoofed header can only
        make the check stricter)."""
        methods = (
            request.method,
            request.headers.get("x-forwarded-method", "GET"),
            request.headers.get("x-original-method", "GET"),
        )
        return any(m.strip().upper() not in SAFE_METHODS for m in methods)

    def _token(self, request: GateRequest) -> tuple[str | None, bool]:
        token = bearer_token(request.headers.get("authorization"))
        if token is not None:
            return token, False
        raw_cookie = request.headers.get("cookie")
        if raw_cookie:
            cookie = parse_cookies(raw_cookie).get(self.cookie_name)
            if cookie:
                return cookie, True
        return None, False

    def _csrf_ok(self, request: GateRequest) -> bool:
        sent = request.headers.get("x-xsrf-token", "")
        expected = parse_cookies(request.headers.get("cookie", "")).get(self.csrf_cookie, "")
        return bool(sent and expected) and hmac.compare_digest(
            sent.encode("latin-1"), expected.encode("latin-1")
        )

    async def auth(self, request: GateRequest) -> GateResponse:
        """The proxy's question: may this request through? 200 with principal headers,
        or 401/403/503 with an RFC 6750 challenge."""
        try:
            required, mode = self._requirements(request)
        except BadInputError as e:
            return bad_request(str(e))
        token, from_cookie = self._token(request)
        if token is None:
            return json_response(
                401,
                {"error": "unauthenticated", "error_description": "no bearer token"},
                "unauthenticated",
                [("WWW-Authenticate", 'Bearer realm="tokensync"')],
            )
        if from_cookie and self._unsafe(request) and not self._csrf_ok(request):
            # 403, not Laravel's 419: nginx's auth_request passes only 2xx, 401 and 403 on
            return json_response(
                403,
                {"error": "csrf_mismatch", "error_description": "X-XSRF-TOKEN must match"},
                "csrf_mismatch",
            )
        # non-ASCII or control characters cannot be a token: invalid, no Redis call
        if self.validator.usage is not None:  # per connection task: no reset needed
            CLIENT.set(proxied_client(request.headers))  # usage per client (shared.usage)
        result = await self.validator.validate(token, required, mode)
        self._log(result, "auth")
        if result.outcome is Outcome.VALID and result.principal is not None:
            p = result.principal
            return GateResponse(
                200,
                [
                    ("X-Tokensync-Principal-Type", header_value(p.tokenable_type)),
                    ("X-Tokensync-Principal-Id", header_value(p.tokenable_id)),
                    ("X-Tokensync-Token-Id", "" if p.token_id is None else str(p.token_id)),
                    ("X-Tokensync-Abilities", abilities_header(p.abilities)),
                    ("Cache-Control", "no-store"),
                ],
                outcome="valid",
            )
        return refusal(result)

    # --- /introspect --------------------------------------------------------------------
    def _client(self, request: GateRequest) -> str | None:
        """The authenticated client id (HTTP Basic, constant-time), or None."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic" or not self.clients:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client, sep, secret = decoded.partition(":")
        expected = self.clients.get(client)
        # compare against something even for an unknown client: no timing hint either way
        ok = hmac.compare_digest(
            secret.encode(), (expected if expected is not None else self._probe).encode()
        )
        return client if sep and expected is not None and ok else None

    def _introspection_token(self, request: GateRequest) -> tuple[str, str] | GateResponse:
        """The client and the ``token`` form field of an authenticated POST, or the refusal
        to send."""
        if request.method != "POST":
            return json_response(
                405, invalid_request("use POST"), "bad_request", [("Allow", "POST")]
            )
        client = self._client(request)
        if client is None:
            return json_response(
                401,
                {"error": "invalid_client"},
                "invalid_client",
                [("WWW-Authenticate", 'Basic realm="tokensync-gate", charset="UTF-8"')],
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return json_response(
                415, invalid_request("send application/x-www-form-urlencoded"), "bad_request"
            )
        try:
            form = parse_qs(request.body.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return json_response(400, invalid_request("the form is not ASCII"), "bad_request")
        tokens = form.get("token", [])
        if len(tokens) != 1 or not tokens[0]:
            return json_response(
                400, invalid_request("send exactly one token field"), "bad_request"
            )
        return client, tokens[0]

    async def introspect(self, request: GateRequest) -> GateResponse:
        """RFC 7662: ``{"active": true, ...}`` or ``{"active": false}`` to an authenticated
        client; 503 when the region cannot say."""
        asked = self._introspection_token(request)
        if isinstance(asked, GateResponse):
            return asked
        client, token = asked
        result = await self.validator.validate(token)
        self._log(result, "introspect", client=client)
        if result.outcome is Outcome.UNAVAILABLE:
            return refusal(result)
        headers = [("Cache-Control", "no-store")]
        if result.outcome is not Outcome.VALID or result.principal is None:
            return json_response(200, {"active": False}, "inactive", headers)
        p = result.principal
        body: dict[str, object] = {
            "active": True,
            "scope": scope_of(p.abilities),
            "sub": f"{p.tokenable_type}:{p.tokenable_id}",
            "token_type": "Bearer",
            "client_id": client,
            "tokensync": {
                "region": self.region,
                "freshness_s": result.freshness_s,
                "token_id": p.token_id,
                "name": p.name,
                "source": result.source,
                "abilities": list(p.abilities),
            },
        }
        created_ms = await self._created_at_ms(token)
        if created_ms is not None:
            body["iat"] = created_ms // 1000
        expiries = [p.expires_at_ms] if p.expires_at_ms is not None else []
        if created_ms is not None and self.expiration_minutes:
            expiries.append(created_ms + self.expiration_minutes * 60_000)
        if expiries:
            body["exp"] = min(expiries) // 1000
        return json_response(200, body, "active", headers)

    async def _created_at_ms(self, token: str) -> int | None:
        """When the token was issued, from the region's record (introspection only)."""
        from shared.tokenformat import parse_presented

        parsed = parse_presented(token)
        if parsed is None:
            return None
        try:
            raw = await self.validator.client.hget(
                self.validator.keys.token(parsed.token_hash), TokenField.CREATED_AT
            )
        except Exception:  # the answer stands without iat
            log.warning("introspect_iat_unavailable", exc_info=True)
            return None
        return int(raw) if raw else None

    # --- /healthz -----------------------------------------------------------------------
    async def healthz(self) -> GateResponse:
        """The region's readiness and freshness (one round trip, deny policy, no cache)."""
        result = await self._health.validate(self._probe)
        body = {
            "region": self.region,
            "ready": result.outcome is not Outcome.UNAVAILABLE,
            "freshness_s": result.freshness_s,
            "staleness_budget_s": self.validator.policy.staleness_budget_s,
            "policy": self.validator.policy.on_unavailable,
        }
        if result.outcome is Outcome.UNAVAILABLE:
            return json_response(
                503,
                {**body, "status": "unavailable", "reason": result.reason},
                "unavailable",
                [("Retry-After", "1")],
            )
        return json_response(200, {**body, "status": "ok"}, "ok")

    def _log(self, result: ValidationResult, route: str, **extra: object) -> None:
        """One line per refusal; the token id, never the token. Admissions are counted in
        /metrics, not logged (a log line costs more than the answer)."""
        if result.outcome is Outcome.VALID:
            return
        p = result.principal
        fields = {
            "route": route,
            "region": self.region,
            "outcome": result.outcome.value,
            "reason": result.reason,
            "token_id": p.token_id if p else None,
            "source": result.source,
            **extra,
        }
        log.info("gate_refused", **fields)


def now() -> float:
    """Monotonic seconds (latency measurement)."""
    return time.perf_counter()
