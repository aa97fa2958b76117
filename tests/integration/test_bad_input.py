"""Bad input gets a clear answer: refused settings at start, 401/419 instead of 500s, and
Hypothesis over the header and token inputs of the admin API and the ASGI middleware."""

from __future__ import annotations

import asyncio
import os
import string
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.orders_service import build
from producer.api import create_app
from producer.store import TokenStore
from shared.settings import Settings
from shared.tokenformat import checksum
from shared.validator import AsyncValidator
from tests.http_helpers import serving
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration

WRITER = f"{'w' * 40}{checksum('w' * 40)}"
USER = "App\\Models\\User"


@pytest.mark.parametrize("budget", ["nan", "inf"])  # more values: tests/unit/test_settings
def test_a_nan_infinite_or_negative_staleness_budget_is_refused_at_start(
    budget: str, tmp_path: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env |= {
        "TOKENSYNC_STALENESS_BUDGET": budget,
        "TOKENSYNC_REGIONS": "eu=redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "shared", "validate", "1|" + WRITER, "--region", "eu"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode not in (0, 3), done.stderr  # refused, not "unavailable"
    lines = done.stderr.strip().splitlines()
    assert 1 == len(lines), done.stderr
    assert "STALENESS_BUDGET" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.fixture
def orders(redis_url: str) -> Iterator[httpx.Client]:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(WRITER, token_id=2, abilities=("orders:read", "orders:write"))
    validator = AsyncValidator.from_url(redis_url)
    with serving(build(validator)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_a_non_ascii_xsrf_header_is_419_not_500(orders: httpx.Client) -> None:
    orders.cookies.set("tokensync_token", WRITER)
    orders.cookies.set("XSRF-TOKEN", "the-csrf-value")
    for value in ("é".encode("latin-1"), "the-csrf-valué".encode(), b"\xff\xfe"):
        response = orders.post("/orders", headers={"X-XSRF-TOKEN": value})
        assert 419 == response.status_code, value
    ok = orders.post("/orders", headers={"X-XSRF-TOKEN": "the-csrf-value"})
    assert 201 == ok.status_code


def test_a_bearer_token_whose_id_has_20_digits_is_401(
    orders: httpx.Client, store: TokenStore
) -> None:
    plain = store.issue("tokensync", 0, "admin", ["*"]).plain_text_token.split("|", 1)[1]
    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as api:
        for head in ("9" * 20, "1" + "0" * 19, str(2**63)):
            token = f"{head}|{plain}"
            response = api.get(
                f"/v1/principals/{USER}/1/tokens", headers={"Authorization": f"Bearer {token}"}
            )
            assert 401 == response.status_code, head
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert (
                401
                == orders.get("/orders", headers={"Authorization": f"Bearer {token}"}).status_code
            )


# --- Hypothesis: whatever the headers hold, an answer (never a 500, never a crash) --------

header_bytes = st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b)
token_id = st.one_of(
    st.integers(min_value=0, max_value=10**25).map(str),
    st.from_regex(r"\A[0-9]{0,3}\Z"),
    st.sampled_from(["", "-1", "٣", "1e3", " 1"]),
)
token_text = st.one_of(
    st.text(max_size=90),
    st.builds(
        lambda head, body: f"{head}|{body}",
        token_id,
        st.one_of(st.just(WRITER), st.text(alphabet="abcXYZ019|é\x00 ", max_size=60)),
    ),
)


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


authorization = st.one_of(
    header_bytes,
    st.builds(lambda t: b"Bearer " + _encoded(t), token_text),
    st.builds(lambda t: b"bearer   " + _encoded(t) + b"  ", token_text),
)
# A browser's cookies: the token (well-formed or not) and the CSRF cookie, or noise.
cookies = st.one_of(
    header_bytes,
    st.builds(
        lambda token, csrf: b"tokensync_token=" + _encoded(token) + b"; XSRF-TOKEN=" + csrf,
        st.one_of(st.just(WRITER), token_text),
        st.one_of(
            st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1).map(
                str.encode
            ),
            header_bytes.filter(lambda b: b";" not in b),
        ),
    ),
)
xsrf_header = st.one_of(header_bytes, st.text(max_size=40).map(_encoded))


async def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """One request through an ASGI app in process (as a server would hand it over)."""
    sent: list[MutableMapping[str, Any]] = []
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if body_sent:
            await asyncio.sleep(3600)
        body_sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    auth=st.one_of(st.just(b""), authorization),
    cookie=cookies,
    xsrf=xsrf_header,
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.sampled_from(
        ["/orders", "/sanctum/csrf-cookie", "/sanctum/csrf-cookies", "/healthz", "/orders/../x"]
    ),
)
def test_the_middleware_answers_any_header_without_a_500(
    redis_url: str, auth: bytes, cookie: bytes, xsrf: bytes, method: str, path: str
) -> None:
    RegionFixture(redis_url).beat()

    async def run() -> int:
        validator = AsyncValidator.from_url(redis_url)
        try:
            headers = [(b"cookie", cookie), (b"x-xsrf-token", xsrf)]
            if auth:
                headers.append((b"authorization", auth))
            return await _call(build(validator), method, path, headers)
        finally:
            await validator.close()

    assert asyncio.run(run()) in {200, 201, 204, 401, 403, 404, 405, 419, 422, 503}


@pytest.fixture
def admin_app(store: TokenStore) -> Any:
    store.issue("tokensync", 0, "admin", ["*"])
    return create_app(Settings(token_expiration_minutes=60), store)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(auth=authorization)
def test_the_admin_api_answers_any_authorization_header_with_401_or_403(
    admin_app: Any, auth: bytes
) -> None:
    status = asyncio.run(
        _call(admin_app, "GET", f"/v1/principals/{USER}/1/tokens", [(b"authorization", auth)])
    )
    assert status in {401, 403}
