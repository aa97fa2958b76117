"""What only MySQL/MariaDB stores need: the polling waker, Laravel's MySQL schema, zones."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from producer.store import TokenStore
from producer.wakeup import waker_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_the_relay_wakes_within_milliseconds_of_a_commit_on_mariadb(
    maria_store: TokenStore,
) -> None:
    waker = waker_for(maria_store.engine)
    try:
        assert not waker.wait(0.05), "nothing committed yet"
        woken_after: list[float] = []
        committed_at: list[float] = []

        def wait() -> None:
            woken = waker.wait(10.0)
            woken_after.append(time.monotonic() - committed_at[0] if woken else -1.0)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.2)
        token = maria_store.issue(USER, 1, "wake")  # committed when issue returns
        committed_at.append(time.monotonic())
        thread.join(timeout=15)
        assert woken_after and 0 <= woken_after[0] < 0.5, woken_after
        # A revocation after the relay drained the outbox wakes it as well.
        with maria_store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE tokensync_outbox SET published_at_ms = 1"))
        waker.wait(0.1)
        maria_store.revoke_token(token.id)
        assert waker.wait(2.0)
    finally:
        waker.close()


def test_the_relay_marks_a_whole_batch_published_in_one_statement_on_mariadb(
    maria_store: TokenStore,
) -> None:
    from producer.outbox import Published, fetch_unpublished, mark_published

    for n in range(150):
        maria_store.issue(USER, n, "batch")
    with maria_store.engine.connect() as conn:
        rows = fetch_unpublished(conn, 1000)
    assert 150 == len(rows)
    seqs = [int(r._mapping["seq"]) for r in rows]
    placed = [Published(seq, seq % 3, 1000 + i, 77) for i, seq in enumerate(seqs[1:])]
    quarantined = Published(seqs[0], None, None, 78)
    status = sa.text(
        "SHOW SESSION STATUS WHERE Variable_name IN ('Com_update', 'Com_update_multi')"
    )
    with maria_store.engine.begin() as conn:
        before = sum(int(v) for _, v in conn.execute(status))
        mark_published(conn, [quarantined, *placed])
        statements = sum(int(v) for _, v in conn.execute(status)) - before
    # one round trip, not one UPDATE per row while the next batch (a revocation) waits
    assert 1 == statements
    with maria_store.engine.connect() as conn:
        marked = {
            int(r[0]): (r[1], r[2], r[3])
            for r in conn.execute(
                sa.text(
                    "SELECT seq, kafka_partition, kafka_offset, published_at_ms"
                    " FROM tokensync_outbox"
                )
            )
        }
    assert (None, None, 78) == marked[seqs[0]]
    for i, seq in enumerate(seqs[1:]):
        assert (seq % 3, 1000 + i, 77) == marked[seq]


def test_laravels_mysql_column_types_are_created(maria_store: TokenStore) -> None:
    with maria_store.engine.connect() as conn:
        columns = {
            row.COLUMN_NAME: row.COLUMN_TYPE.lower()
            for row in conn.execute(
                sa.text(
                    "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS"
                    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'personal_access_tokens'"
                )
            )
        }
    assert columns["id"] == "bigint(20) unsigned" or columns["id"] == "bigint unsigned"
    assert columns["tokenable_id"] in {"bigint(20) unsigned", "bigint unsigned"}
    assert columns["abilities"] == "text"
    assert {columns[c] for c in ("last_used_at", "expires_at", "created_at", "updated_at")} == {
        "timestamp"
    }
