"""The same request gets the same answer from the gate, the ASGI middleware and the admin
API (admitted or refused), over real HTTP: the gate as its own process, the middleware in
the example service, the admin API on a token store, all holding the same token.

The bearer header is one function (``shared.tokenformat.bearer_token``), but each surface
collects the header itself: a request carrying the header (or a cookie) twice must not be
one token to the gate and another to the middleware. The header reading does not depend on
the store's dialect, so the admin API runs on SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from examples.orders_service import build
from producer.store import TokenStore
from shared.settings import Settings
from shared.tokenformat import checksum
from shared.validator import AsyncValidator, Policy
from tests.conftest import migrated_store
from tests.gate_helpers import raw_request, running_gate
from tests.http_helpers import serving
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration

UNKNOWN = f"{'u' * 40}{checksum('u' * 40)}"
Headers = Sequence[tuple[str, str]]


@dataclass
class Surfaces:
    token: str  # ``id|secret``, live in the store and in the region, holding ``*``
    gate: httpx.Client
    middleware: httpx.Client
    admin_api: httpx.Client

    def answers(self, headers: Headers) -> dict[str, bool]:
        """Whether each surface admitted a GET carrying exactly ``headers`` (values sent
        as latin-1 octets, byte for byte)."""
        return {
            name: _admitted(str(client.base_url), path, headers)
            for name, client, path in (
                ("gate", self.gate, "/auth"),
                ("middleware", self.middleware, "/orders"),
                ("admin_api", self.admin_api, "/v1/principals/tokensync/1/tokens"),
            )
        }


def _admitted(base_url: str, path: str, headers: Headers, method: str = "GET") -> bool:
    """Whether a request with exactly ``headers`` got a 2xx (no body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {base_url.removeprefix('http://')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if method != "GET":
        lines.append("Content-Length: 0")
    data = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("latin-1")
    status, _, _ = raw_request(base_url.rstrip("/"), data)
    return 200 <= status < 300


@pytest.fixture
def surfaces(tmp_path: Path, redis_url: str, sqlite_url: str) -> Iterator[Surfaces]:
    store: TokenStore
    with migrated_store(sqlite_url) as store:
        issued = store.issue("tokensync", 1, "root", ["*"])
        token = issued.plain_text_token
        token_id, _, secret = token.partition("|")
        region = RegionFixture(redis_url)
        region.beat()
        region.token(secret, token_id=int(token_id), abilities=("*",))
        validator = AsyncValidator.from_url(redis_url, policy=Policy(staleness_budget_s=60))
        from producer.api import create_app

        with (
            running_gate(tmp_path, redis_url, staleness_budget=60) as gate_url,
            serving(build(validator)) as middleware_url,
            serving(create_app(Settings(), store)) as api_url,
            httpx.Client(base_url=gate_url) as gate,
            httpx.Client(base_url=middleware_url) as middleware,
            httpx.Client(base_url=api_url) as api,
        ):
            surfaces = Surfaces(token, gate, middleware, api)
            assert {"gate": True, "middleware": True, "admin_api": True} == surfaces.answers(
                [("Authorization", f"Bearer {token}")]
            )
            yield surfaces


def _disagreements(surfaces: Surfaces, cases: Sequence[Headers]) -> list[object]:
    found: list[object] = []
    for headers in cases:
        answers = surfaces.answers(headers)
        if len(set(answers.values())) != 1:
            found.append((headers, answers))
    return found


def test_two_authorization_headers_get_the_same_answer_from_the_gate_the_middleware_and_the_admin_api(  # noqa: E501
    surfaces: Surfaces,
) -> None:
    t = surfaces.token
    cases: list[Headers] = [
        [("Authorization", f"Bearer {t}"), ("Authorization", f"Bearer {t}")],
        [("Authorization", f"Bearer {t}"), ("Authorization", f"Bearer {UNKNOWN}")],
        [("Authorization", f"Bearer {UNKNOWN}"), ("Authorization", f"Bearer {t}")],
        [("Authorization", "Basic YTpi"), ("Authorization", f"Bearer {t}")],
        [("Authorization", f"Bearer {t}"), ("Authorization", "Basic YTpi")],
        [("Authorization", "Bearer"), ("Authorization", f"Bearer {t}")],
    ]
    assert [] == _disagreements(surfaces, cases)


def test_one_authorization_header_in_any_spelling_gets_the_same_answer_everywhere(
    surfaces: Surfaces,
) -> None:
    t = surfaces.token
    spellings = [
        f"Bearer {t}",
        f"bearer {t}",
        f"BEARER   {t}",  # (HTTP itself strips leading and trailing whitespace)
        f"Bearer\t{t}",
        f"Bearer {t} x",
        f"Bearer {t},",
        f"Bearer 0{t}",  # a leading zero in the id
        f"Bearer {t.replace('|', '||', 1)}",
        f"Bearer |{t.partition('|')[2]}",
        f"Bearer {t.partition('|')[2]}",  # the secret alone: looked up by hash
        f"Bearer {t}\u00e9",
        f"Bearer \u00a0{t}",
        f"Bearer {t}\u0085",
        f"Bearer {'9' * 19}|{t.partition('|')[2]}",
        f"Bearer {'1' * 20}|{t.partition('|')[2]}",
        "Bearer " + "a" * 8000,
        "Bearer",
        f"Token {t}",
        f"Bearer{t}",
    ]
    cases: list[Headers] = [[("Authorization", s)] for s in spellings]
    assert [] == _disagreements(surfaces, cases)


def test_a_token_cookie_named_twice_or_sent_in_two_headers_gets_one_answer_from_the_gate_and_the_middleware(  # noqa: E501
    surfaces: Surfaces,
) -> None:
    t = surfaces.token
    cases: list[Headers] = [
        [("Cookie", f"tokensync_token={t}; tokensync_token={UNKNOWN}")],
        [("Cookie", f"tokensync_token={UNKNOWN}; tokensync_token={t}")],
        [("Cookie", "theme=dark"), ("Cookie", f"tokensync_token={t}")],  # HTTP/2 splits them
        [("Cookie", f"tokensync_token={t}"), ("Cookie", f"tokensync_token={UNKNOWN}")],
        [("Cookie", f'tokensync_token="{t}"')],
        [("Cookie", f"other=1;tokensync_token={t}")],
    ]
    found = []
    for headers in cases:
        answers = surfaces.answers(headers)
        del answers["admin_api"]  # bearer tokens only
        if len(set(answers.values())) != 1:
            found.append((headers, answers))
    assert [] == found


def test_a_csrf_header_sent_twice_gets_one_answer_from_the_gate_and_the_middleware(
    surfaces: Surfaces,
) -> None:
    """A cookie-carried token on an unsafe method: the gate asked about a POST (the proxy's
    ``X-Original-Method``) and the middleware serving that POST read the same headers."""
    t = surfaces.token
    cookie = ("Cookie", f"tokensync_token={t}; XSRF-TOKEN=the-csrf-value")
    cases: list[Headers] = [
        [cookie, ("X-XSRF-TOKEN", "the-csrf-value")],
        [cookie, ("X-XSRF-TOKEN", "the-csrf-value"), ("X-XSRF-TOKEN", "the-csrf-value")],
        [cookie, ("X-XSRF-TOKEN", "the-csrf-value"), ("X-XSRF-TOKEN", "another")],
        [cookie, ("X-XSRF-TOKEN", "another"), ("X-XSRF-TOKEN", "the-csrf-value")],
    ]
    found = []
    for headers in cases:
        gate = _admitted(
            str(surfaces.gate.base_url), "/auth", [*headers, ("X-Original-Method", "POST")]
        )
        middleware = _admitted(str(surfaces.middleware.base_url), "/orders", headers, "POST")
        if gate != middleware:
            found.append((headers, {"gate": gate, "middleware": middleware}))
    assert [] == found
