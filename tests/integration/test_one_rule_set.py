"""One rule set: a region, the store fallback and the admin API answer every case alike.

Each case is written into a real store (SQLite, then PostgreSQL); the region is
fed the store's own outbox rows through the relay's conversion and the worker's
apply script; the same presented token then goes through all surfaces.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from producer.api import create_app
from producer.clock import utcnow
from producer.fallback import StoreFallback
from producer.models import PAT
from producer.outbox import fetch_unpublished, row_to_event
from producer.store import TokenStore
from producer.token_check import check_stored_token
from shared.events import GLOBAL_SCOPE, ability_scope, principal_scope
from shared.rules import Mode
from shared.settings import Settings
from shared.tokenformat import checksum
from shared.validator import Policy, Validator
from tests.http_helpers import serving
from tests.region_helpers import USER, RegionFixture

pytestmark = pytest.mark.integration

LIFETIME_MINUTES = 60
READ = "tokens:read"


@dataclass(frozen=True)
class Case:
    """One row of the table: what to present, what it must be able to do, the answer."""

    name: str
    token: str
    required: tuple[str, ...]
    mode: Mode
    expected: tuple[str, str]


def _epoch(store: TokenStore, scope: str, before_ms: Callable[[int], int]) -> None:
    """An epoch written without deleting its rows: a row that survived a mass revocation
    (under READ COMMITTED it was inserted before the revoke and committed after it)."""
    with store.engine.begin() as conn:
        store._epoch(conn, scope, before_ms(store.now_ms(conn)), None)


def _after_the_clock_moves(store: TokenStore) -> None:
    """Wait until the database clock is past the newest epoch (epochs have ms resolution)."""
    with store.engine.connect() as conn:
        start = store.now_ms(conn)
        while store.now_ms(conn) <= start + 2:
            time.sleep(0.002)


def build_cases(store: TokenStore) -> list[Case]:
    """Write every case into the store; return the table."""

    def issue(owner: int, abilities: list[str], **kw: dt.datetime) -> str:
        return store.issue(USER, owner, f"case-{owner}", abilities, **kw).plain_text_token

    cases: list[Case] = []
    # Global epoch first: it revokes everything issued before it.
    old = issue(1, [READ])
    _epoch(store, GLOBAL_SCOPE, lambda now: now + 1)
    _after_the_clock_moves(store)
    cases.append(Case("revoked by the global epoch", old, (READ,), "all", ("invalid", "revoked")))

    live = issue(2, [READ])
    cases += [
        Case("a live token", live, (READ,), "all", ("valid", "")),
        Case("a live token, no ability asked", live, (), "all", ("valid", "")),
        Case("the wildcard", issue(3, ["*"]), (READ,), "all", ("valid", "")),
        Case("an ability missing", issue(4, ["other"]), (READ,), "all", ("forbidden", "ability")),
        Case("any of two, one held", issue(5, ["b"]), ("a", "b"), "any", ("valid", "")),
        Case("any of two, none held", issue(6, ["c"]), ("a", "b"), "any", ("forbidden", "ability")),
        Case("all of two, one held", issue(7, ["a"]), ("a", "b"), "all", ("forbidden", "ability")),
        Case("abilities are case-sensitive", issue(8, ["Tokens:Read"]), (READ,), "all",
             ("forbidden", "ability")),
    ]  # fmt: skip
    past = utcnow() - dt.timedelta(minutes=1)
    expired = issue(9, [READ], expires_at=past)
    cases.append(Case("expires_at passed", expired, (READ,), "all", ("invalid", "expired")))

    lifetime = store.issue(USER, 10, "aged", [READ])
    with store.engine.begin() as conn:  # Laravel's created_at, two lifetimes ago
        conn.execute(
            PAT.update()
            .where(PAT.c.id == lifetime.id)
            .values(created_at=utcnow() - dt.timedelta(minutes=2 * LIFETIME_MINUTES))
        )
    cases.append(
        Case(
            "the global lifetime from created_at passed",
            lifetime.plain_text_token,
            (READ,),
            "all",
            ("invalid", "expired"),
        )
    )

    principal = issue(11, [READ])
    _epoch(store, principal_scope(USER, 11), lambda now: now + 1)
    cases.append(Case("its principal's epoch", principal, (READ,), "all", ("invalid", "revoked")))
    ability = issue(12, [READ, "export"])
    _epoch(store, ability_scope("export"), lambda now: now + 1)
    cases.append(Case("an ability's epoch", ability, (READ,), "all", ("invalid", "revoked")))
    _after_the_clock_moves(store)
    older = issue(13, [READ])
    _epoch(store, principal_scope(USER, 13), lambda now: now - 60_000)
    cases.append(Case("an epoch older than the token", older, (READ,), "all", ("valid", "")))
    later = issue(14, [READ])  # issued after the export epoch; holds no export anyway
    cases.append(Case("a token issued after the epochs", later, (READ,), "all", ("valid", "")))

    plain = live.split("|", 1)[1]
    unknown_entropy = "U" * 40
    cases += [
        Case("an unknown token", f"{unknown_entropy}{checksum(unknown_entropy)}", (READ,), "all",
             ("invalid", "unknown")),
        Case("the wrong id", f"999999|{plain}", (READ,), "all", ("invalid", "unknown")),
        Case("a 20-digit id", f"{'9' * 20}|{plain}", (READ,), "all", ("invalid", "malformed")),
        Case("an id past BIGINT", f"{2**63}|{plain}", (READ,), "all", ("invalid", "malformed")),
        Case("a bad checksum", live[:-1] + ("0" if live[-1] != "0" else "1"), (READ,), "all",
             ("invalid", "malformed")),
    ]  # fmt: skip
    return cases


def mirror(store: TokenStore, region: RegionFixture) -> None:
    """Feed the region the store's outbox as the relay would publish it."""
    with store.engine.connect() as conn:
        rows = fetch_unpublished(conn, 100_000)
    region._apply([row_to_event(row) for row in rows])
    region.beat()


@pytest.fixture
def api(store: TokenStore) -> Iterator[httpx.Client]:
    # The cases are the app's own tokens: let their principal type drive the admin API here,
    # so that the API answers by the rules alone (the admin-principal rule is tested apart).
    settings = Settings(token_expiration_minutes=LIFETIME_MINUTES, admin_types=(USER, "tokensync"))
    with serving(create_app(settings, store)) as url, httpx.Client(base_url=url) as http:
        yield http


def _api_answer(http: httpx.Client, token: str) -> tuple[str, str]:
    response = http.get(
        f"/v1/principals/{USER}/1/tokens", headers={"Authorization": f"Bearer {token}"}
    )
    return {200: ("valid", ""), 401: ("invalid", "?"), 403: ("forbidden", "ability")}.get(
        response.status_code, (str(response.status_code), response.text)
    )


def test_regions_the_store_fallback_and_the_admin_api_apply_one_rule_set(
    store: TokenStore, region_urls: dict[str, str], api: httpx.Client
) -> None:
    cases = build_cases(store)
    region = RegionFixture(region_urls["eu"])
    mirror(store, region)
    policy = Policy(expiration_minutes=LIFETIME_MINUTES)
    regional = Validator.from_url(region_urls["eu"], policy=policy)
    fallback = Validator.from_url(  # an empty region: not ready, so the store answers
        region_urls["us"],
        policy=Policy(expiration_minutes=LIFETIME_MINUTES, on_unavailable="fallback"),
        fallback=StoreFallback(store),
    )
    disagreements = []
    try:
        for case in cases:
            now_ms = int(time.time() * 1000)
            answers = {
                "region": regional.validate(case.token, case.required, case.mode),
                "fallback": fallback.validate(case.token, case.required, case.mode),
                "store check": check_stored_token(
                    store, policy, case.token, now_ms, required=case.required, mode=case.mode
                ),
            }
            seen = {name: (r.outcome.value, r.reason) for name, r in answers.items()}
            if seen["region"] == ("invalid", "unknown") and case.expected[1] == "expired":
                seen["region"] = case.expected  # a region forgets a token once it expired
            if case.mode == "all" and case.required == (READ,):
                expected_api = case.expected if case.expected[0] != "invalid" else ("invalid", "?")
                if _api_answer(api, case.token) != expected_api:
                    disagreements.append((case.name, "admin API", _api_answer(api, case.token)))
            disagreements += [
                (case.name, name, answer)
                for name, answer in seen.items()
                if answer != case.expected
            ]
        live = cases[1].token
        sources = {fallback.validate(live).source, regional.validate(live).source}
    finally:
        regional.close()
        fallback.close()
    assert [] == disagreements
    assert {"store", "region"} == sources  # each surface answered for itself


def test_a_row_that_survived_a_revoke_all_is_refused_by_the_api_as_by_regions(
    store: TokenStore, api: httpx.Client
) -> None:
    admin = store.issue("tokensync", 0, "admin", [READ]).plain_text_token
    assert (
        200
        == api.get(
            f"/v1/principals/{USER}/1/tokens", headers={"Authorization": f"Bearer {admin}"}
        ).status_code
    )
    _epoch(store, GLOBAL_SCOPE, lambda now: now + 1)  # the row survives in the table
    with store.engine.connect() as conn:
        assert 1 == conn.execute(sa.select(sa.func.count()).select_from(PAT)).scalar_one()
    refused = api.get(
        f"/v1/principals/{USER}/1/tokens", headers={"Authorization": f"Bearer {admin}"}
    )
    assert 401 == refused.status_code
