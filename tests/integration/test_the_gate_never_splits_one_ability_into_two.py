"""What the gate tells an upstream about a token's abilities names exactly the token's
abilities: an ability whose text holds the separator of the list it is written into (a
comma in ``X-Tokensync-Abilities``, a space in RFC 7662's ``scope``) must not reach the
upstream as two abilities. Sanctum's ``tokenCan`` is exact: a token holding the one ability
``"orders:read,orders:write"`` may not write orders, behind the gate or in Laravel.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from shared.tokenformat import checksum
from tests.gate_helpers import CLIENT_ID, CLIENT_SECRET, running_gate
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration

COMMA = f"{'c' * 40}{checksum('c' * 40)}"
SPACE = f"{'s' * 40}{checksum('s' * 40)}"


@pytest.fixture
def gate(tmp_path: Path, redis_url: str) -> Iterator[httpx.Client]:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(COMMA, token_id=1, abilities=("orders:read,orders:write",))
    region.token(SPACE, token_id=2, abilities=("orders:read orders:write", "a%2Cb"))
    with (
        running_gate(tmp_path, redis_url, staleness_budget=60) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


def _upstream_reads(header: str) -> list[str]:
    """The abilities an upstream reads from ``X-Tokensync-Abilities``: a comma-separated
    list, each item percent-decoded (the gate percent-encodes what a header cannot carry)."""
    return [unquote(item) for item in header.split(",") if item]


def test_the_principal_headers_name_each_ability_of_the_token_exactly(
    gate: httpx.Client,
) -> None:
    comma = gate.get("/auth", headers={"Authorization": f"Bearer 1|{COMMA}"})
    space = gate.get("/auth", headers={"Authorization": f"Bearer 2|{SPACE}"})
    assert (200, 200) == (comma.status_code, space.status_code)
    assert ["orders:read,orders:write"] == _upstream_reads(comma.headers["x-tokensync-abilities"])
    assert ["orders:read orders:write", "a%2Cb"] == _upstream_reads(
        space.headers["x-tokensync-abilities"]
    )


def test_introspection_scope_never_lists_an_ability_the_token_does_not_hold(
    gate: httpx.Client,
) -> None:
    for token, held in ((f"1|{COMMA}", {"orders:read,orders:write"}), (f"2|{SPACE}", set())):
        answer = gate.post("/introspect", data={"token": token}, auth=(CLIENT_ID, CLIENT_SECRET))
        assert 200 == answer.status_code and answer.json()["active"]
        scopes = set(re.split(r"[ ]+", answer.json()["scope"])) - {""}
        assert scopes <= held | {"a%2Cb"}, scopes
