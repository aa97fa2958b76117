"""The outbox triggers of ``producer.triggers`` for MySQL 8 and MariaDB 10.6+.

MySQL has one trigger per table and event and no statement triggers: an
INSERT, an UPDATE and a DELETE trigger on ``personal_access_tokens`` and an
INSERT and an UPDATE trigger on ``tokensync_epochs``, each writing the outbox in
the writer's transaction, exactly as on PostgreSQL. ``TRUNCATE`` fires no
trigger on MySQL (and needs the DROP privilege): the application's database
user must not hold DROP on the table (``tokensync doctor`` checks it).

Milliseconds come from ``SYSDATE(3)`` (the clock at the call, like PostgreSQL's
``clock_timestamp()``). String comparisons are binary: the table's collation is
case-insensitive, and a change of case in a name or ability is a change.
No stored functions are created (they need SUPER when binary logging is on).
"""

from __future__ import annotations

from producer.txmarks import SUPPRESS, mysql_marked

__all__ = [
    "DIALECTS",
    "NOW_MS",
    "TRIGGERS",
    "TRIGGER_TABLES",
    "drop_statements",
    "install_statements",
]

DIALECTS = frozenset({"mysql", "mariadb"})

NOW_MS = "CAST(FLOOR(UNIX_TIMESTAMP(SYSDATE(3)) * 1000) AS SIGNED)"

_COLUMNS = (
    "kind, op, token_id, token_hash, tokenable_type, tokenable_id, name, abilities, "
    "expires_at, row_created_at, issued_at_ms, recorded_at_ms"
)
_ISSUED = (
    "COALESCE((SELECT m.issued_at_ms FROM tokensync_token_meta m WHERE m.token_id = OLD.id),"
    " CAST(FLOOR(UNIX_TIMESTAMP(OLD.created_at) * 1000) AS SIGNED), 0)"
)
_WATCHED = (
    "token",
    "abilities",
    "expires_at",
    "name",
    "tokenable_type",
    "tokenable_id",
    "created_at",
)
_SAME = " AND ".join(f"CAST(NEW.{c} AS BINARY) <=> CAST(OLD.{c} AS BINARY)" for c in _WATCHED)


def _row(op: str, side: str, issued: str) -> str:
    return (
        f"INSERT INTO tokensync_outbox ({_COLUMNS}) VALUES ('token', '{op}', {side}.id,"
        f" {side}.token, {side}.tokenable_type, CAST({side}.tokenable_id AS CHAR), {side}.name,"
        f" {side}.abilities, {side}.expires_at, {side}.created_at, {issued}, now_ms)"
    )


TRIGGER_TABLES = {
    "tokensync_pat_inserted": "personal_access_tokens",
    "tokensync_pat_updated": "personal_access_tokens",
    "tokensync_pat_deleted": "personal_access_tokens",
    "tokensync_epoch_inserted": "tokensync_epochs",
    "tokensync_epoch_updated": "tokensync_epochs",
}
TRIGGERS = tuple(TRIGGER_TABLES)

_INSTALL = [
    f"""
CREATE TRIGGER tokensync_pat_inserted AFTER INSERT ON personal_access_tokens FOR EACH ROW
BEGIN
  DECLARE now_ms BIGINT DEFAULT {NOW_MS};
  INSERT INTO tokensync_token_meta (token_id, issued_at_ms) VALUES (NEW.id, now_ms)
    ON DUPLICATE KEY UPDATE issued_at_ms = now_ms;
  {_row("issued", "NEW", "now_ms")};
END""",
    f"""
CREATE TRIGGER tokensync_pat_deleted AFTER DELETE ON personal_access_tokens FOR EACH ROW
BEGIN
  DECLARE now_ms BIGINT DEFAULT {NOW_MS};
  DECLARE issued BIGINT DEFAULT {_ISSUED};
  DELETE FROM tokensync_token_meta WHERE token_id = OLD.id;
  IF NOT {mysql_marked(SUPPRESS)} THEN
    {_row("revoked", "OLD", "issued")};
  END IF;
END""",
    f"""
CREATE TRIGGER tokensync_pat_updated AFTER UPDATE ON personal_access_tokens FOR EACH ROW
BEGIN
  DECLARE now_ms BIGINT;
  DECLARE issued BIGINT;
  IF NOT ({_SAME}) THEN
    SET now_ms = {NOW_MS};
    SET issued = {_ISSUED};
    IF NOT (CAST(NEW.token AS BINARY) <=> CAST(OLD.token AS BINARY)) THEN
      {_row("revoked", "OLD", "issued")};
    END IF;
    {_row("updated", "NEW", "issued")};
  END IF;
END""",
    f"""
CREATE TRIGGER tokensync_epoch_inserted AFTER INSERT ON tokensync_epochs FOR EACH ROW
  INSERT INTO tokensync_outbox (kind, op, scope, before_ms, recorded_at_ms)
    VALUES ('epoch', 'epoch', NEW.scope, NEW.before_ms, {NOW_MS})""",
    f"""
CREATE TRIGGER tokensync_epoch_updated AFTER UPDATE ON tokensync_epochs FOR EACH ROW
BEGIN
  IF NOT (NEW.before_ms <=> OLD.before_ms) THEN
    INSERT INTO tokensync_outbox (kind, op, scope, before_ms, recorded_at_ms)
      VALUES ('epoch', 'epoch', NEW.scope, NEW.before_ms, {NOW_MS});
  END IF;
END""",
]


def drop_statements() -> list[str]:
    """The SQL that removes the triggers."""
    return [f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS]


def install_statements() -> list[str]:
    """The SQL that installs (or replaces) the triggers: each dropped, then created.

    MySQL 8 has no CREATE OR REPLACE TRIGGER and DDL commits: while the triggers are
    reinstalled a write may go unseen, which ``tokensync store repair`` covers with a
    global epoch."""
    return [*drop_statements(), *_INSTALL]
