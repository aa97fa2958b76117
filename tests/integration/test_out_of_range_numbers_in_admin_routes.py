"""Out-of-range numbers in admin routes (ids and seqs past 64 bits, prune hours past
year 1) answer with a clear 4xx, never a 500 (real uvicorn, SQLite and PostgreSQL stores)."""

from __future__ import annotations

import httpx
import pytest

from producer.api import create_app
from producer.store import TokenStore
from shared.settings import Settings
from tests.http_helpers import serving

pytestmark = pytest.mark.integration
BIG = str(2**70)  # no BIGINT holds it


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"/v1/tokens/{BIG}"),
        ("POST", "/v1/tokens/prune?hours=30000000"),
        ("GET", f"/v1/receipts/{BIG}"),
    ],
)
def test_an_out_of_range_number_in_an_admin_route_is_a_4xx_not_a_500(
    store: TokenStore, method: str, path: str
) -> None:
    root = store.issue("tokensync", 0, "root", ["*"]).plain_text_token
    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as api:
        response = api.request(
            method, path, headers={"Authorization": f"Bearer {root}"}, json={}, timeout=30
        )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
