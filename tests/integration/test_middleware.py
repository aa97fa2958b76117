"""The ASGI middleware over real HTTP against the example service and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from examples.orders_service import build
from shared.tokenformat import checksum
from shared.validator import AsyncValidator, Policy
from tests.http_helpers import serving
from tests.region_helpers import RegionFixture, now_ms

pytestmark = pytest.mark.integration

READER = f"{'r' * 40}{checksum('r' * 40)}"
WRITER = f"{'w' * 40}{checksum('w' * 40)}"


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


def test_a_stale_region_answers_503_under_the_deny_policy(
    http: httpx.Client, region: RegionFixture
) -> None:
    region.beat(now_ms() - 60_000)
    # heartbeats only move forward; age the region by waiting past the 2 s budget instead
    import time

    time.sleep(2.3)
    response = http.get("/orders", headers={"Authorization": f"Bearer {READER}"})
    assert (503, "stale") == (response.status_code, response.json()["reason"])
    assert "retry-after" in response.headers
