"""Rows the relay cannot publish as grants: denied or quarantined, never a stopped relay."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.outbox import unpublished_count
from producer.relay import RelayOptions
from producer.store import TokenStore
from shared.errors import UsageError
from shared.events import Heartbeat, TokenEvent, TokenOp
from shared.keys import Topics
from tests.kafka_helpers import kafka_connector, read_topic, running_relay, wait_for
from tests.laravel_helpers import insert_raw

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def backlog(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        return unpublished_count(conn)


def bad_expiries(dialect: str) -> list[object]:
    if dialect == "postgresql":
        return ["infinity", "-infinity", "10000-01-01 00:00:00"]
    if dialect in {"mysql", "mariadb"}:
        return ["0000-00-00 00:00:00"]  # the zero date (strict mode refuses the rest)
    return [1767225600, "", "0000-00-00 00:00:00"]


def test_rows_that_cannot_be_grants_are_published_as_denials_and_the_rest_flows_on(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    dialect = store.engine.dialect.name
    denied: list[str] = []
    insert_raw(store.engine, "1" * 64, abilities='["\\ud800"]')  # a lone surrogate, JSON-escaped
    denied.append("1" * 64)
    for i, expires in enumerate(bad_expiries(dialect)):
        token = f"{i + 2}" * 64
        if dialect == "postgresql":
            with store.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name,"
                        " token, abilities, expires_at, created_at, updated_at) VALUES"
                        " (:t, 7, 'x', :h, '[\"read\"]', CAST(:e AS timestamp), now(), now())"
                    ),
                    {"t": USER, "h": token, "e": expires},
                )
        else:
            insert_raw(store.engine, token, expires_at=expires)
        denied.append(token)
    # over the record size limit (MySQL's TEXT holds at most 65,535 bytes)
    insert_raw(
        store.engine, "8" * 64, name="n" * (65_500 if dialect in {"mysql", "mariadb"} else 100_000)
    )
    denied.append("8" * 64)
    insert_raw(store.engine, "not a sha-256 hash")  # cannot even be denied: quarantined
    good = store.issue(USER, 7, "good", ["read"])

    options = RelayOptions(heartbeat_interval_s=0.2)
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics), options=options):
        wait_for(lambda: backlog(store) == 0, what="outbox drained past the bad rows")
        first = len(read_topic(kafka_bootstrap, topics.tokens, timeout_s=2))
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, topics.tokens, timeout_s=2)) >= first + 6,
            what="heartbeats after the bad rows",
        )
    events = [r.event() for r in read_topic(kafka_bootstrap, topics.tokens)]
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    by_hash = {e.token_hash: e for e in tokens}
    assert dict.fromkeys(denied, TokenOp.REVOKED) == {h: by_hash[h].op for h in denied}
    assert all(by_hash[h].abilities == () for h in denied)
    assert TokenOp.ISSUED == by_hash[good.token_hash].op
    assert ("read",) == by_hash[good.token_hash].abilities
    assert len(tokens) == len(denied) + 1, "the unhashable row was quarantined, not published"
    assert any(isinstance(e, Heartbeat) for e in events)


def test_abilities_and_names_that_are_not_unicode_text_are_refused_before_commit(
    store: TokenStore,
) -> None:
    for abilities, name in ((["ok", "\ud800"], "fine"), (["read"], "bad \udcff name")):
        with pytest.raises(UsageError):
            store.issue(USER, 1, name, abilities)
    with pytest.raises(UsageError):
        store.issue("App\\\udc80", 1, "fine", ["read"])
    with pytest.raises(UsageError):
        store.revoke_ability("\ud800")
    assert 0 == backlog(store)
    with store.engine.connect() as conn:
        assert 0 == conn.execute(sa.text("SELECT count(*) FROM personal_access_tokens")).scalar()


def test_the_api_refuses_a_lone_surrogate_ability_with_422_and_commits_nothing(
    store: TokenStore,
) -> None:
    import httpx

    from producer.api import create_app
    from shared.settings import Settings
    from tests.http_helpers import serving

    admin = store.issue("tokensync", 0, "admin", ["tokens:issue"]).plain_text_token
    before = backlog(store)
    body = '{"tokenable_type": "U", "tokenable_id": 1, "name": "n", "abilities": ["\\ud800"]}'
    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as http:
        response = http.post(
            "/v1/tokens",
            content=body,
            headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        )
    assert 422 == response.status_code, response.text
    assert "Unicode" in response.json()["error"]
    assert before == backlog(store)
    assert [] == store.list_tokens("U", 1)


def test_the_cli_refuses_an_ability_that_is_not_utf8_in_one_line(sqlite_url: str) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_DATABASE_URL"] = sqlite_url
    args = [sys.executable.encode(), b"-m", b"shared", b"token", b"issue", b"--type", b"U"]
    args += [b"--id", b"1", b"--name", b"n", b"--ability", b"files:\xed\xa0\x80"]
    result = subprocess.run(args, env=env, capture_output=True, timeout=60, check=False)
    assert 0 != result.returncode
    assert 1 == len(result.stderr.strip().splitlines()), result.stderr
    assert b"Traceback" not in result.stderr
    from producer.schema import create_engine

    engine = create_engine(sqlite_url)
    try:
        assert [] == TokenStore(engine).list_tokens("U", 1)
    finally:
        engine.dispose()


def test_a_record_over_the_brokers_size_limit_goes_out_as_a_denial_not_retried_forever(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:  # a topic whose limit is below the relay's own 64 KiB cap
        admin.create_topics(
            [NewTopic(topics.tokens, 3, 1, topic_configs={"max.message.bytes": "2048"})]
        )
    finally:
        admin.close()
    big = store.issue(USER, 7, "n" * 4000, ["read"])
    good = store.issue(USER, 7, "good", ["read"])
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics)):
        wait_for(lambda: backlog(store) == 0, what="outbox drained past the big record")
    events = [r.event() for r in read_topic(kafka_bootstrap, topics.tokens, expect=2)]
    by_hash = {e.token_hash: e for e in events if isinstance(e, TokenEvent)}
    assert TokenOp.REVOKED == by_hash[big.token_hash].op
    assert TokenOp.ISSUED == by_hash[good.token_hash].op


def test_a_sqlite_row_with_bytes_that_are_not_utf8_is_denied_and_the_rest_flows_on(
    sqlite_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    from producer.schema import create_engine, migrate

    engine = create_engine(sqlite_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        with engine.begin() as conn:  # PHP writes whatever bytes it holds
            conn.execute(
                sa.text(
                    "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name,"
                    " token, abilities, created_at, updated_at) VALUES (:t, 7, CAST(X'C3FF' AS"
                    " TEXT), :h, CAST(X'5B22FF225D' AS TEXT), :n, :n)"
                ),
                {"t": USER, "h": "e" * 64, "n": utcnow()},
            )
        good = store.issue(USER, 7, "good", ["read"])
        with running_relay(engine, kafka_connector(kafka_bootstrap, topics)):
            wait_for(lambda: backlog(store) == 0, what="outbox drained past the bad bytes")
        events = [r.event() for r in read_topic(kafka_bootstrap, topics.tokens, expect=2)]
        by_hash = {e.token_hash: e for e in events if isinstance(e, TokenEvent)}
        assert TokenOp.REVOKED == by_hash["e" * 64].op
        assert TokenOp.ISSUED == by_hash[good.token_hash].op
    finally:
        engine.dispose()
