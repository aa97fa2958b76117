"""One ability rule (``shared.abilities.grants``) and one reading of a bearer header
(``shared.tokenformat.bearer_token``): the ASGI middleware, the gate and the admin API
read the same token from the same header, and no module decides either on its own."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis.asyncio as aioredis
from starlette.requests import Request

from gate.app import Gate, GateRequest
from gate.metrics import GateMetrics
from producer import api_deps
from producer.authz import grants_admin_power, holds
from shared.abilities import WILDCARD, grants
from shared.asgi import TokenAuthMiddleware, requires
from shared.outcomes import Principal
from shared.rules import missing_abilities
from shared.tokenformat import bearer_token
from shared.validator import AsyncValidator

ROOT = Path(__file__).resolve().parents[2]

# header value -> the token it carries (None: none)
HEADERS: list[tuple[str | None, str | None]] = [
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),
    ("BEARER   abc  ", "abc"),
    (" Bearer abc", "abc"),
    ("Bearer 1|abc def", "1|abc def"),
    ("Bearer", None),
    ("Bearer    ", None),
    ("Basic YTpi", None),
    ("Bearerabc", None),
    ("Token abc", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("header", "token"), HEADERS)
def test_a_bearer_header_carries_its_token_or_none(header: str | None, token: str | None) -> None:
    assert token == bearer_token(header)


def _validator() -> AsyncValidator:
    return AsyncValidator(aioredis.Redis(host="127.0.0.1", port=1))  # never called here


def _middleware_reads(header: str | None) -> str | None:
    middleware = TokenAuthMiddleware(app=mock.Mock(), validator=_validator())
    headers = [] if header is None else [(b"authorization", header.encode("latin-1"))]
    token, from_cookie = middleware._token({"type": "http", "headers": headers})
    assert not from_cookie
    return token


def _gate_reads(header: str | None) -> str | None:
    gate = Gate("eu", _validator(), GateMetrics(workers=1))
    headers = {} if header is None else {"authorization": header}
    token, from_cookie = gate._token(GateRequest("GET", "/auth", "", headers))
    assert not from_cookie
    return token


def _admin_api_reads(header: str | None) -> str | None:
    """The token the admin API's dependency hands to authentication (None: it answered
    401 'a bearer token is required' before asking)."""
    headers = [] if header is None else [(b"authorization", header.encode("latin-1"))]
    request = Request({"type": "http", "headers": headers})
    seen: list[str] = []

    def authenticate(ctx: Any, token: str) -> None:
        seen.append(token)

    with (
        mock.patch.object(api_deps, "authenticate", authenticate),
        pytest.raises(api_deps.ApiError) as refused,
    ):
        api_deps.require("tokens:read")(request, mock.Mock())
    assert 401 == refused.value.status
    return seen[0] if seen else None


@pytest.mark.parametrize(("header", "token"), HEADERS)
def test_the_middleware_the_gate_and_the_admin_api_read_the_same_token_from_a_header(
    header: str | None, token: str | None
) -> None:
    assert [token, token, token] == [
        _middleware_reads(header),
        _gate_reads(header),
        _admin_api_reads(header),
    ]


ABILITY_CASES = [
    (("*",), "orders:write", True),
    (("orders:read",), "orders:read", True),
    (("orders:read",), "orders:write", False),
    (("Orders:Read",), "orders:read", False),  # case-sensitive, as Sanctum
    (("orders:*",), "orders:read", False),  # only a lone "*" is a wildcard
    ((), "orders:read", False),
    ((), "*", False),
    (("*",), "*", True),
]


@pytest.mark.parametrize(("abilities", "ability", "granted"), ABILITY_CASES)
def test_every_surface_decides_an_ability_by_the_one_rule(
    abilities: tuple[str, ...], ability: str, granted: bool
) -> None:
    principal = Principal("App\\Models\\User", "1", 1, "n", abilities, None)
    assert granted == grants(abilities, ability)
    assert granted == principal.can(ability)
    assert granted == holds(list(abilities), ability)
    assert granted == (missing_abilities(principal, [ability], "all") == ())
    dependency = requires(ability)
    request = mock.Mock()
    with mock.patch("shared.asgi.principal_of", return_value=principal):
        if granted:
            assert principal == dependency(request)
        else:
            with pytest.raises(Exception, match="Invalid ability provided"):
                dependency(request)


def test_admin_power_is_an_admin_ability_or_the_wildcard() -> None:
    assert grants_admin_power("tokensync", [WILDCARD], {"tokensync"})
    assert grants_admin_power("tokensync", ["tokens:read"], {"tokensync"})
    assert not grants_admin_power("tokensync", ["orders:read"], {"tokensync"})
    assert not grants_admin_power("App\\Models\\User", [WILDCARD], {"tokensync"})


def _modules() -> list[Path]:
    return [
        p
        for package in ("shared", "producer", "workers", "gate")
        for p in sorted((ROOT / package).rglob("*.py"))
        if "stack" not in p.relative_to(ROOT).parts
    ]


# (module): why it still tests for the wildcard itself
WILDCARD_ELSEWHERE = {
    "producer/epochs.py": "finds wildcard rows for a SQL query (wildcard_token_ids)",
}


def _own_rules(path: Path) -> list[str]:
    """Where a module decides the ability rule or reads a bearer scheme itself."""
    found = []
    tree = ast.parse(path.read_text())
    # a dict value (e.g. the OpenAPI security scheme {"scheme": "bearer"}) names the scheme,
    # it reads no header
    named = {id(v) for d in ast.walk(tree) if isinstance(d, ast.Dict) for v in d.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            left = node.left
            if (isinstance(left, ast.Constant) and left.value == "*") or (
                isinstance(left, ast.Name) and left.id == "WILDCARD"
            ):
                found.append(f"{node.lineno}: a wildcard test of its own")
        if (
            isinstance(node, ast.Constant)
            and node.value in ("bearer", "bearer ")
            and id(node) not in named
        ):
            found.append(f"{node.lineno}: reads the bearer scheme itself")
    return found


@pytest.mark.parametrize("module", [str(p.relative_to(ROOT)) for p in _modules()])
def test_no_module_decides_abilities_or_reads_bearer_headers_on_its_own(module: str) -> None:
    if module in ("shared/abilities.py", "shared/tokenformat.py"):
        return
    found = _own_rules(ROOT / module)
    if module in WILDCARD_ELSEWHERE:
        found = [f for f in found if "wildcard" not in f]
    assert [] == found
