"""The ASGI middleware over real HTTP against the example service and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from examples.orders_service import build
from shared.asgi import RouteRule, TokenAuthMiddleware, principal_of
from shared.tokenformat import checksum
from shared.validator import AsyncValidator, Policy
from tests.http_helpers import serving
from tests.region_helpers import RegionFixture, now_ms

pytestmark = pytest.mark.integration

READER = f"{'r' * 40}{checksum('r' * 40)}"
WRITER = f"{'w' * 40}{checksum('w' * 40)}"
NOBODY = f"{'n' * 40}{checksum('n' * 40)}"


@pytest.fixture
def region(redis_url: str) -> RegionFixture:
    fixture = RegionFixture(redis_url)
    fixture.beat()
    fixture.token(READER, token_id=1, abilities=("orders:read",))
    fixture.token(WRITER, token_id=2, abilities=("orders:read", "orders:write"))
    return fixture


@pytest.fixture
def http(redis_url: str, region: RegionFixture) -> Iterator[httpx.Client]:
    validator = AsyncValidator.from_url(
        redis_url, policy=Policy(staleness_budget_s=2, clock_skew_allowance_s=0)
    )
    with serving(build(validator)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_bearer_tokens_get_401_403_or_through(http: httpx.Client) -> None:
    missing = http.get("/orders")
    assert 401 == missing.status_code and missing.headers["www-authenticate"].startswith("Bearer")
    assert 401 == http.get("/orders", headers={"Authorization": "Bearer nonsense"}).status_code
    assert 200 == http.get("/orders", headers={"Authorization": f"Bearer {READER}"}).status_code
    denied = http.post("/orders", headers={"Authorization": f"Bearer {READER}"})
    assert (403, "Invalid ability provided.") == (denied.status_code, denied.json()["detail"])
    assert 201 == http.post("/orders", headers={"Authorization": f"Bearer {WRITER}"}).status_code
    assert 200 == http.get("/healthz").status_code


def test_a_cookie_token_needs_a_matching_csrf_header_on_unsafe_methods(http: httpx.Client) -> None:
    assert 204 == http.post("/session", json={"token": WRITER}).status_code
    http.cookies.set("tokensync_token", WRITER)  # the test client is not on https
    assert 200 == http.get("/orders").status_code  # safe method: no CSRF needed
    assert 419 == http.post("/orders").status_code  # no header
    assert 204 == http.get("/sanctum/csrf-cookie").status_code
    http.cookies.set("XSRF-TOKEN", "the-csrf-value")
    assert 419 == http.post("/orders", headers={"X-XSRF-TOKEN": "another-value"}).status_code
    assert 201 == http.post("/orders", headers={"X-XSRF-TOKEN": "the-csrf-value"}).status_code


def test_a_bearer_token_needs_no_csrf_header(http: httpx.Client) -> None:
    http.cookies.set("XSRF-TOKEN", "x")
    assert 201 == http.post("/orders", headers={"Authorization": f"Bearer {WRITER}"}).status_code


def test_a_stale_region_answers_503_under_the_deny_policy(redis_url: str) -> None:
    # A region whose newest heartbeat is a minute old, far past the 2 s budget: no waiting.
    region = RegionFixture(redis_url)
    region.beat(now_ms() - 60_000)
    region.token(READER, token_id=1, abilities=("orders:read",))
    validator = AsyncValidator.from_url(
        redis_url, policy=Policy(staleness_budget_s=2, clock_skew_allowance_s=0)
    )
    with serving(build(validator)) as url, httpx.Client(base_url=url) as http:
        response = http.get("/orders", headers={"Authorization": f"Bearer {READER}"})
    assert (503, "stale") == (response.status_code, response.json()["reason"])
    assert "retry-after" in response.headers


def _service(validator: AsyncValidator) -> TokenAuthMiddleware:
    """A Starlette app with a websocket route and look-alike paths, behind the middleware."""

    async def whoami(websocket: WebSocket) -> None:
        await websocket.accept()
        principal = principal_of(websocket)
        await websocket.send_json({"owner": principal.tokenable_id if principal else None})
        await websocket.close()

    async def ok(request: StarletteRequest) -> PlainTextResponse:
        principal = principal_of(request)
        return PlainTextResponse(principal.tokenable_id if principal else "anonymous")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await validator.close()  # its connections belong to the server's loop

    app = Starlette(
        lifespan=lifespan,
        routes=[
            WebSocketRoute("/ws/orders", whoami),
            Route("/session", ok, methods=["GET", "POST"]),
            Route("/sessions/admin/delete", ok, methods=["GET", "POST"]),
            Route("/orders", ok),
            Route("/ordersadmin", ok),
        ],
    )
    rules = [
        RouteRule("/session", public=True),
        RouteRule("/orders", abilities=("orders:read",)),
        RouteRule("/ws/orders", abilities=("orders:write",)),
    ]
    return TokenAuthMiddleware(app, validator, rules)


Sent = list[dict[str, Any]]


def handshake(
    redis_url: str,
    headers: dict[str, str] | None = None,
    *,
    denial_extension: bool = True,
) -> Sent:
    """Drive one websocket handshake through the middleware (as an ASGI server would) and
    return what the server was told to send."""
    sent: Sent = []
    inbox: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def run() -> None:
        validator = AsyncValidator.from_url(redis_url)
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "server": ("testserver", 80),
            "path": "/ws/orders",
            "raw_path": b"/ws/orders",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"testserver"),
                *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
            ],
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}} if denial_extension else {},
        }
        try:
            await _service(validator)(scope, receive, send)
        finally:
            await validator.close()

    asyncio.run(run())
    return sent


def test_a_websocket_without_a_token_is_refused_with_401_before_accept(
    redis_url: str, region: RegionFixture
) -> None:
    sent = handshake(redis_url)
    assert "websocket.http.response.start" == sent[0]["type"]
    assert 401 == sent[0]["status"]
    assert (b"www-authenticate", b'Bearer realm="tokensync"') in sent[0]["headers"]
    assert "websocket.accept" not in {m["type"] for m in sent}


def test_a_websocket_whose_token_lacks_the_ability_is_refused_with_403(
    redis_url: str, region: RegionFixture
) -> None:
    sent = handshake(redis_url, {"Authorization": f"Bearer {READER}"})
    assert ("websocket.http.response.start", 403) == (sent[0]["type"], sent[0]["status"])


def test_a_websocket_with_a_valid_token_reaches_the_app_with_its_principal(
    redis_url: str, region: RegionFixture
) -> None:
    sent = handshake(redis_url, {"Authorization": f"Bearer {WRITER}"})
    assert ["websocket.accept", "websocket.send", "websocket.close"] == [m["type"] for m in sent]
    assert '{"owner":"1"}' == sent[1]["text"]


def test_a_websocket_refusal_without_the_denial_extension_closes_with_4401_or_4403(
    redis_url: str, region: RegionFixture
) -> None:
    assert [{"type": "websocket.close", "code": 4401, "reason": "unauthenticated"}] == handshake(
        redis_url, denial_extension=False
    )
    lacking = handshake(redis_url, {"Authorization": f"Bearer {READER}"}, denial_extension=False)
    assert [("websocket.close", 4403)] == [(m["type"], m["code"]) for m in lacking]


def test_a_cookie_carried_websocket_token_from_another_origin_is_refused(
    redis_url: str, region: RegionFixture
) -> None:
    cookie = {"Cookie": f"tokensync_token={WRITER}"}
    evil = handshake(redis_url, {**cookie, "Origin": "https://evil.example"})
    assert ("websocket.http.response.start", 403) == (evil[0]["type"], evil[0]["status"])
    same = handshake(redis_url, {**cookie, "Origin": "http://testserver"})
    assert "websocket.accept" == same[0]["type"]


@pytest.fixture
def service(redis_url: str, region: RegionFixture) -> Iterator[httpx.Client]:
    validator = AsyncValidator.from_url(redis_url)
    with serving(_service(validator)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_public_path_rules_match_whole_segments_only(service: httpx.Client) -> None:
    assert "anonymous" == service.get("/session").text
    for path in ("/sessions/admin/delete", "/session/../sessions/admin/delete"):
        refused = service.post(path)
        assert 401 == refused.status_code, path
    reader = {"Authorization": f"Bearer {READER}"}
    assert "1" == service.post("/sessions/admin/delete", headers=reader).text


def test_ability_rules_match_whole_segments_only(
    service: httpx.Client, region: RegionFixture
) -> None:
    region.token(NOBODY, token_id=3, abilities=())
    bearer = {"Authorization": f"Bearer {NOBODY}"}
    assert 403 == service.get("/orders", headers=bearer).status_code
    assert 200 == service.get("/ordersadmin", headers=bearer).status_code  # not under /orders


def _status_in_process(redis_url: str, path: str, token: str | None) -> int:
    """One HTTP request handed to the middleware as a server would, path untouched (HTTP
    clients remove dot segments before sending; a raw client or a proxy may not)."""
    sent: Sent = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def run() -> None:
        validator = AsyncValidator.from_url(redis_url)
        headers = [(b"host", b"testserver")]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
        }
        try:
            await _service(validator)(scope, receive, send)
        finally:
            await validator.close()

    asyncio.run(run())
    return int(sent[0]["status"])


def test_a_path_with_dot_segments_is_never_public_and_matches_rules_literally(
    redis_url: str, region: RegionFixture
) -> None:
    region.token(NOBODY, token_id=3, abilities=())
    assert 401 == _status_in_process(redis_url, "/session/../sessions/admin/delete", None)
    assert 401 == _status_in_process(redis_url, "/session/./x", None)
    assert 403 == _status_in_process(redis_url, "/orders/../ordersadmin", NOBODY)
    assert 403 == _status_in_process(redis_url, "//orders", NOBODY)
