"""The admin API must apply the same rules as the regions."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import sqlalchemy as sa

from producer.api import create_app
from producer.clock import utcnow
from producer.store import TokenStore
from shared.settings import Settings
from tests.http_helpers import serving

pytestmark = pytest.mark.integration
ADMIN = "tokensync"


def test_an_admin_token_past_the_global_lifetime_gets_401_on_the_admin_api(
    store: TokenStore,
) -> None:
    """Invariant 11: regions deny a token older than TOKENSYNC_TOKEN_EXPIRATION minutes
    (Sanctum's ``expiration``); the admin API must too. It only checks ``expires_at``."""
    settings = Settings.from_env({"TOKENSYNC_TOKEN_EXPIRATION": "60"})
    aged = TokenStore(store.engine, expiration_minutes=60)
    root = aged.issue(ADMIN, 0, "root", ["*"])
    with store.engine.begin() as conn:  # two hours pass
        conn.execute(
            sa.text("UPDATE personal_access_tokens SET created_at = :c WHERE id = :i"),
            {"c": utcnow() - dt.timedelta(hours=2), "i": root.id},
        )
    assert 0 == aged.count_live(), "the store itself counts the token as expired"
    headers = {"Authorization": f"Bearer {root.plain_text_token}"}
    with serving(create_app(settings, aged)) as url, httpx.Client(base_url=url) as http:
        read = http.get("/v1/audit", headers=headers)
        minted = http.post(
            "/v1/tokens",
            json={"tokenable_type": ADMIN, "tokenable_id": 9, "name": "fresh", "abilities": ["*"]},
            headers=headers,
        )
    assert (401, 401) == (read.status_code, minted.status_code), (
        "an expired admin token still drives the admin API (and mints itself a fresh '*' token)"
    )


def test_a_short_lived_admin_token_cannot_mint_itself_a_never_expiring_twin(
    store: TokenStore,
) -> None:
    """Invariant 12 ("nobody mints more admin power than they hold"): a responder's
    token issued for one hour can mint an admin token with the same abilities and no
    expiry at all, and keeps its power forever after its own token expired."""
    caller = store.issue(
        ADMIN, 0, "one-hour", ["tokens:issue", "tokens:read"], utcnow() + dt.timedelta(hours=1)
    )
    headers = {"Authorization": f"Bearer {caller.plain_text_token}"}
    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as http:
        minted = http.post(
            "/v1/tokens",
            json={
                "tokenable_type": ADMIN,
                "tokenable_id": 0,
                "name": "forever",
                "abilities": ["tokens:issue", "tokens:read"],
            },
            headers=headers,
        )
    if minted.status_code == 201:
        expires = minted.json()["expires_at"]
        assert expires is not None, "an admin token outliving its minter's expiry was minted"
        assert caller.expires_at is not None
        assert dt.datetime.fromisoformat(expires).replace(tzinfo=None) <= caller.expires_at
    else:
        assert 403 == minted.status_code


def test_a_short_lived_admin_token_cannot_rotate_a_never_expiring_admin_token_into_its_hands(
    store: TokenStore,
) -> None:
    """Rotation hands the caller the replacement's plaintext, which keeps the old token's
    expiry: rotating a never-expiring admin token would outlive the caller's power."""
    caller = store.issue(
        ADMIN, 0, "one-hour", ["tokens:rotate", "tokens:read"], utcnow() + dt.timedelta(hours=1)
    )
    forever = store.issue(ADMIN, 1, "forever", ["tokens:read"])
    app = store.issue("App\\Models\\User", 1, "app", ["*"])
    headers = {"Authorization": f"Bearer {caller.plain_text_token}"}
    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as http:
        denied = http.post(f"/v1/tokens/{forever.id}/rotate", json={}, headers=headers)
        allowed = http.post(f"/v1/tokens/{app.id}/rotate", json={}, headers=headers)
    assert 403 == denied.status_code, denied.text
    assert store.get(forever.id).id == forever.id, "nothing rotated"
    assert 201 == allowed.status_code, "ordinary app tokens are not bounded by the caller"
