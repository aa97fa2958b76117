"""Who may drive the admin API: admin principals only, and nobody escalates."""

from __future__ import annotations

import httpx
import pytest

from producer.api import create_app
from producer.store import TokenStore
from shared.settings import Settings
from tests.http_helpers import bearer, serving

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"
PUBLIC = {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def test_an_end_user_wildcard_token_gets_401_on_every_admin_route(
    client: httpx.Client, store: TokenStore
) -> None:
    user = bearer(store.issue(USER, 1, "default").plain_text_token)  # Sanctum's default: ['*']
    victim = store.issue(USER, 2, "victim")
    spec = client.get("/openapi.json").json()
    statuses = {}
    for path, methods in spec["paths"].items():
        if path in PUBLIC:
            continue
        url = path.replace("{token_id}", str(victim.id)).replace("{seq}", "1")
        url = url.replace("{tokenable_type}", "x").replace("{tokenable_id}", "1")
        for method in methods:
            response = client.request(method.upper(), url, json={}, headers=bearer("x"))
            assert 401 == response.status_code, (method, path)
            response = client.request(method.upper(), url, json={}, headers=user)
            statuses[f"{method.upper()} {path}"] = response.status_code
    assert len(statuses) >= 10
    assert dict.fromkeys(statuses, 401) == statuses
    assert [victim.id] == [t.id for t in store.list_tokens(USER, 2)]


def test_admin_types_are_configurable(store: TokenStore) -> None:
    settings = Settings.from_env({"TOKENSYNC_ADMIN_TYPES": "App\\Models\\Operator, ops"})
    operator = bearer(
        store.issue("App\\Models\\Operator", 1, "op", ["tokens:read"]).plain_text_token
    )
    default_admin = bearer(store.issue(ADMIN, 0, "root", ["*"]).plain_text_token)
    with serving(create_app(settings, store)) as url, httpx.Client(base_url=url) as http:
        path = f"/v1/principals/{USER}/1/tokens"
        assert 200 == http.get(path, headers=operator).status_code
        assert 401 == http.get(path, headers=default_admin).status_code


# The escalation matrix: caller x target x action -> HTTP status.
CALLERS: dict[str, tuple[str, list[str]]] = {
    "issuer": (ADMIN, ["tokens:issue"]),
    "issuer+read": (ADMIN, ["tokens:issue", "tokens:read"]),
    "rotator": (ADMIN, ["tokens:rotate"]),
    "rotator+read": (ADMIN, ["tokens:rotate", "tokens:read"]),
    "root": (ADMIN, ["*"]),
    "user*": (USER, ["*"]),
}
TARGETS: dict[str, tuple[str, list[str]]] = {
    "app*": (USER, ["*"]),
    "app-read": (USER, ["orders:read"]),
    "app-with-admin-ability": (USER, ["tokens:issue"]),
    "admin-read": (ADMIN, ["tokens:read"]),
    "admin*": (ADMIN, ["*"]),
}
# fmt: off
EXPECTED: dict[tuple[str, str], tuple[int, int]] = {
    # (caller, target): (issue, rotate)
    ("issuer", "app*"): (201, 403),
    ("issuer", "app-read"): (201, 403),
    ("issuer", "app-with-admin-ability"): (201, 403),
    ("issuer", "admin-read"): (403, 403),
    ("issuer", "admin*"): (403, 403),
    ("issuer+read", "app*"): (201, 403),
    ("issuer+read", "app-read"): (201, 403),
    ("issuer+read", "app-with-admin-ability"): (201, 403),
    ("issuer+read", "admin-read"): (201, 403),
    ("issuer+read", "admin*"): (403, 403),
    ("rotator", "app*"): (403, 201),
    ("rotator", "app-read"): (403, 201),
    ("rotator", "app-with-admin-ability"): (403, 403),
    ("rotator", "admin-read"): (403, 403),
    ("rotator", "admin*"): (403, 403),
    ("rotator+read", "app*"): (403, 201),
    ("rotator+read", "app-read"): (403, 201),
    ("rotator+read", "app-with-admin-ability"): (403, 403),
    ("rotator+read", "admin-read"): (403, 201),
    ("rotator+read", "admin*"): (403, 403),
    ("root", "app*"): (201, 201),
    ("root", "app-read"): (201, 201),
    ("root", "app-with-admin-ability"): (201, 201),
    ("root", "admin-read"): (201, 201),
    ("root", "admin*"): (201, 201),
    ("user*", "app*"): (401, 401),
    ("user*", "app-read"): (401, 401),
    ("user*", "app-with-admin-ability"): (401, 401),
    ("user*", "admin-read"): (401, 401),
    ("user*", "admin*"): (401, 401),
}
# fmt: on


def test_nobody_mints_or_rotates_more_admin_power_than_they_hold(
    client: httpx.Client, store: TokenStore
) -> None:
    assert set(EXPECTED) == {(c, t) for c in CALLERS for t in TARGETS}
    callers = {
        name: bearer(store.issue(kind, 900 + i, name, abilities).plain_text_token)
        for i, (name, (kind, abilities)) in enumerate(CALLERS.items())
    }
    actual: dict[tuple[str, str], tuple[int, int]] = {}
    for caller, headers in callers.items():
        for target, (kind, abilities) in TARGETS.items():
            issued = client.post(
                "/v1/tokens",
                json={
                    "tokenable_type": kind,
                    "tokenable_id": 7,
                    "name": target,
                    "abilities": abilities,
                },
                headers=headers,
            )
            original = store.issue(kind, 8, target, abilities)
            rotated = client.post(f"/v1/tokens/{original.id}/rotate", json={}, headers=headers)
            actual[(caller, target)] = (issued.status_code, rotated.status_code)
            if rotated.status_code != 201:  # a refused rotation leaves the original alone
                assert original.id == store.get(original.id).id
                assert "token" not in rotated.json()
            if issued.status_code != 201:
                assert "token" not in issued.json()
    assert EXPECTED == actual
