"""The token store's HTTP API: admin abilities, JSON errors, the same operations as the CLI."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from producer.store import TokenStore
from tests.http_helpers import bearer

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_missing_or_unknown_token_is_401_with_a_bearer_challenge(client: httpx.Client) -> None:
    for headers in ({}, bearer("1|" + "x" * 48), {"Authorization": "Basic abc"}):
        response = client.post(
            "/v1/tokens",
            json={"tokenable_type": USER, "tokenable_id": 1, "name": "n"},
            headers=headers,
        )
        assert 401 == response.status_code
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "error" in response.json()


def test_a_token_without_the_needed_ability_is_403(client: httpx.Client, store: TokenStore) -> None:
    reader = store.issue("tokensync", 0, "reader", ["tokens:read"]).plain_text_token
    response = client.post(
        "/v1/tokens",
        json={"tokenable_type": USER, "tokenable_id": 1, "name": "n"},
        headers=bearer(reader),
    )
    assert 403 == response.status_code
    assert "tokens:issue" in response.json()["error"]


def test_an_admin_issues_lists_rotates_and_revokes(client: httpx.Client, store: TokenStore) -> None:
    admin = bearer(
        store.issue(
            "tokensync",
            0,
            "admin",
            ["tokens:issue", "tokens:revoke", "tokens:read", "tokens:rotate", "revocations:mass"],
        ).plain_text_token
    )
    created = client.post(
        "/v1/tokens",
        json={
            "tokenable_type": USER,
            "tokenable_id": 5,
            "name": "api",
            "abilities": ["read"],
            "expires_in": "1h",
        },
        headers=admin,
    )
    assert 201 == created.status_code
    body = created.json()
    assert body["token"].startswith(f"{body['id']}|") and ["read"] == body["abilities"]
    listed = client.get(f"/v1/principals/{USER}/5/tokens", headers=admin).json()
    assert [body["id"]] == [t["id"] for t in listed]
    assert all("token" not in t for t in listed)
    rotated = client.post(f"/v1/tokens/{body['id']}/rotate", json={}, headers=admin).json()
    assert [rotated["id"]] == [
        t["id"] for t in client.get(f"/v1/principals/{USER}/5/tokens", headers=admin).json()
    ]
    revoked = client.delete(f"/v1/tokens/{rotated['id']}", headers=admin)
    assert 200 == revoked.status_code
    # the seq answered is the outbox row of this revocation, the newest one
    with store.engine.connect() as conn:
        revocation_seqs = conn.execute(
            sa.text("SELECT seq FROM tokensync_outbox WHERE token_id = :id AND op = 'revoked'"),
            {"id": rotated["id"]},
        ).scalars()
        assert [revoked.json()["seq"]] == [int(seq) for seq in revocation_seqs]
    assert revoked.json()["seq"] > rotated["seq"]
    epoch = client.post(
        "/v1/revocations/principal",
        json={"tokenable_type": USER, "tokenable_id": 5, "reason": "test"},
        headers=admin,
    )
    assert "principal:App\\Models\\User:5" == epoch.json()["scope"]


def test_bad_input_is_a_4xx_with_a_json_error_and_writes_nothing(
    client: httpx.Client, store: TokenStore
) -> None:
    admin = bearer(store.issue("tokensync", 0, "admin", ["*"]).plain_text_token)
    before = len(store.list_tokens("tokensync", 0))
    cases = [
        client.post(
            "/v1/tokens",
            json={"tokenable_type": USER, "tokenable_id": 1, "name": "n", "abilities": [""]},
            headers=admin,
        ),
        client.post(
            "/v1/tokens",
            json={"tokenable_type": USER, "tokenable_id": 1, "name": "n", "expires_in": "soon"},
            headers=admin,
        ),
        client.post("/v1/revocations/all", json={"before": "yesterday"}, headers=admin),
        client.post("/v1/revocations/ability", json={"ability": ""}, headers=admin),
    ]
    assert [422, 422, 422, 422] == [c.status_code for c in cases]
    assert 404 == client.delete("/v1/tokens/999999", headers=admin).status_code
    assert before == len(store.list_tokens("tokensync", 0))
    assert [] == store.list_tokens(USER, 1)


def test_the_openapi_document_and_health_are_served(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/tokens", "/v1/revocations/all", "/v1/receipts/{seq}"} <= set(spec["paths"])
    assert client.get("/healthz").json()["ok"]
