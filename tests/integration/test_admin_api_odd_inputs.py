"""Receipts, lookups and odd input on the admin API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
import sqlalchemy as sa

from producer.store import TokenStore
from shared.keys import RedisKeys
from shared.settings import Region, Settings
from tests.cli_helpers import run_cli
from tests.http_helpers import bearer

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"


def published_but_never_applied(store: TokenStore, redis_url: str) -> int:
    """A revocation the relay placed at partition 0 offset 5, in a region that is down."""
    store.add_region(Region("eu", redis_url))
    victim = store.issue(USER, 1, "victim")
    seq = store.revoke_token(victim.id).seq
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tokensync_outbox SET kafka_partition = 0, kafka_offset = 5,"
                " published_at_ms = recorded_at_ms WHERE seq = :s"
            ),
            {"s": seq},
        )
    return seq


def test_a_receipt_wait_of_nan_does_not_hold_a_server_thread_forever(
    client: httpx.Client, store: TokenStore, redis_url: str
) -> None:
    """GET /v1/receipts/{seq} caps ``wait`` with min(max(wait, 0), 60): a NaN passes the cap
    (every comparison with NaN is false), the deadline is NaN, and the loop only ends when
    every region applied the seq. A tokens:read caller pins one worker thread per request
    (40 requests exhaust the API's thread pool), while the server polls Redis every 2 ms.
    The mutation routes' ``timeout`` has no cap at all (``?wait=true&timeout=1e9``)."""
    seq = published_but_never_applied(store, redis_url)
    reader = bearer(store.issue(ADMIN, 0, "reader", ["tokens:read"]).plain_text_token)
    try:
        try:
            response = client.get(
                f"/v1/receipts/{seq}", params={"wait": "nan"}, headers=reader, timeout=8.0
            )
        except httpx.TimeoutException:
            pytest.fail("wait=nan: no answer within 8 s (the 60 s cap does not hold)")
        assert response.status_code in {200, 422}
    finally:  # let the stuck request end: the region 'applies' everything
        r = redis.Redis.from_url(redis_url)
        r.hset(RedisKeys(Settings().redis_namespace).partitions, "o:0", 1_000_000)
        r.close()


def test_a_lookup_reports_the_regions_registered_with_region_add(
    client: httpx.Client, store: TokenStore, redis_url: str
) -> None:
    """Issue 13 item 5: find shows 'which regions currently accept it'. Receipts ask
    every region (settings and the store's registry: ``all_regions``); the lookup asks the
    settings' regions only, so after ``tokensync region add`` it reports no region at all
    and a responder reads 'accepted nowhere'."""
    store.add_region(Region("eu", redis_url))
    leaked = store.issue(USER, 1, "leaked")
    reader = bearer(store.issue(ADMIN, 0, "reader", ["tokens:read"]).plain_text_token)
    found = client.post("/v1/tokens/lookup", json={"id": leaked.id}, headers=reader)
    assert 200 == found.status_code
    assert ["eu"] == sorted(found.json()["regions"])


@pytest.mark.parametrize("reason", ["\ud800 lone surrogate", "nul \x00 byte"])
def test_a_reason_that_cannot_be_stored_is_a_422_not_a_500(
    client: httpx.Client, store: TokenStore, reason: str
) -> None:
    """Bad input: a clear error. Names and abilities are checked for lone surrogates and
    NUL; the reason that goes into the audit record is not, and a responder's revocation
    fails with a 500 (nothing revoked) because of one odd character pasted into it."""
    victim = store.issue(USER, 1, "victim")
    revoker = bearer(store.issue(ADMIN, 0, "responder", ["tokens:revoke"]).plain_text_token)
    body = '{"id": %d, "reason": "%s"}' % (  # noqa: UP031 - raw JSON escapes
        victim.id,
        reason.encode("unicode_escape").decode().replace("\\x00", "\\u0000"),
    )
    response = client.post(
        "/v1/tokens/revoke",
        content=body,
        headers={**revoker, "Content-Type": "application/json"},
    )
    assert response.status_code in {200, 422}, (response.status_code, response.text)


@pytest.mark.parametrize("reason", ["\u200b", " \t\u200b\u2060 ", "\ufeff"])
def test_a_mass_revocation_whose_reason_is_only_invisible_characters_is_a_422(
    client: httpx.Client, store: TokenStore, reason: str
) -> None:
    victim = store.issue(USER, 1, "victim")
    mass = bearer(store.issue(ADMIN, 0, "responder", ["revocations:mass"]).plain_text_token)
    response = client.post(
        "/v1/revocations/principal",
        json={"tokenable_type": USER, "tokenable_id": 1, "reason": reason},
        headers=mass,
    )
    assert 422 == response.status_code, response.text
    assert [victim.id] == [t.id for t in store.list_tokens(USER, 1)], "nothing revoked"


def test_token_find_on_the_command_line_asks_the_regions_registered_with_region_add(
    store: TokenStore,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store.add_region(Region("eu", redis_url))
    leaked = store.issue(USER, 1, "leaked")
    monkeypatch.delenv("TOKENSYNC_REGIONS", raising=False)
    run = run_cli(monkeypatch, capsys, database_url, "token", "find", str(leaked.id), "--json")
    assert 0 == run.code, run.err
    assert ["eu"] == sorted(json.loads(run.out)["regions"])


def test_a_request_body_past_the_limit_is_refused_with_413_before_it_is_parsed(
    client: httpx.Client, store: TokenStore
) -> None:
    """Bodies are parsed before the caller's token is checked: an unauthenticated client
    could make the API buffer and parse any amount. Declared or chunked, past the limit
    it is a 413, with or without a token; a large valid request still works."""
    from producer.api import MAX_BODY_BYTES

    huge = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    declared = client.post("/v1/tokens", content=huge, headers={"Content-Type": "application/json"})
    assert 413 == declared.status_code, declared.text

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 8192):
            yield huge[start : start + 8192]

    chunked = client.post(
        "/v1/tokens", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert 413 == chunked.status_code, chunked.text
    issuer = bearer(store.issue(ADMIN, 0, "issuer", ["tokens:issue"]).plain_text_token)
    largest = {
        "tokenable_type": USER,
        "tokenable_id": 1,
        "name": "n" * 4096,
        "abilities": [f"{i:03d}" + "a" * 252 for i in range(256)],
    }
    answer = client.post("/v1/tokens", json=largest, headers=issuer)
    if store.engine.dialect.name in ("mysql", "mariadb"):
        # Sanctum's abilities column is TEXT there: 256 abilities of 255 characters do not
        # fit in its 65,535 bytes. A clear refusal, nothing written.
        assert 422 == answer.status_code, answer.text
        assert "65535" in answer.text
        assert [] == store.list_tokens(USER, 1)
        largest["abilities"] = [f"{i:03d}" + "a" * 249 for i in range(256)]  # 65,281 bytes
        answer = client.post("/v1/tokens", json=largest, headers=issuer)
    assert 201 == answer.status_code, answer.text
