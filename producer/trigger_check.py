"""Are the outbox triggers in place? (``migrate:fresh``, a restore or a manual DROP
removes them silently: from then on no change to the token table reaches a region.)

``missing_triggers`` names what is gone, per dialect; the relay asks every second and
stops certifying heartbeats while anything is (``producer.relay``), ``tokensync store
repair`` reinstalls them (``producer.repair``).
"""

from __future__ import annotations

import sqlalchemy as sa

from producer import triggers_mysql

__all__ = ["EXPECTED", "missing_triggers"]

# Trigger names per dialect and the table each belongs to.
EXPECTED: dict[str, dict[str, str]] = {
    "postgresql": {
        "tokensync_pat_outbox": "personal_access_tokens",
        "tokensync_pat_truncate": "personal_access_tokens",
        "tokensync_epoch_outbox": "tokensync_epochs",
    },
    "sqlite": {
        "tokensync_pat_inserted": "personal_access_tokens",
        "tokensync_pat_updated": "personal_access_tokens",
        "tokensync_pat_deleted": "personal_access_tokens",
        "tokensync_epoch_inserted": "tokensync_epochs",
        "tokensync_epoch_updated": "tokensync_epochs",
    },
    "mysql": dict(triggers_mysql.TRIGGER_TABLES),
}
EXPECTED["mariadb"] = EXPECTED["mysql"]

_PRESENT = {
    "postgresql": sa.text(
        "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE NOT t.tgisinternal AND c.relname IN ('personal_access_tokens', 'tokensync_epochs')"
        " AND pg_table_is_visible(c.oid) AND t.tgenabled = 'A'"
    ),
    "sqlite": sa.text("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"),
    "mysql": sa.text(
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS"
        " WHERE TRIGGER_SCHEMA = DATABASE()"
    ),
}
_PRESENT["mariadb"] = _PRESENT["mysql"]


def missing_triggers(conn: sa.Connection) -> list[str]:
    """``table.trigger`` of every outbox trigger that is not installed (or, on PostgreSQL,
    is not ``ENABLE ALWAYS``: a disabled trigger fires never, an ``ENABLE`` one not in
    ``session_replication_role = replica`` sessions); empty when all are in place. A
    missing table counts as well."""
    dialect = conn.dialect.name
    expected = EXPECTED.get(dialect)
    if expected is None:
        return []
    present = {(str(name), str(table)) for name, table in conn.execute(_PRESENT[dialect])}
    return sorted(
        f"{table}.{name}" for name, table in expected.items() if (name, table) not in present
    )
