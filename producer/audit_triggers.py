"""The audit trigger: an outbox row that no tokensync transaction wrote is audited as ``sql``.

Every change to a token or an epoch writes an outbox row (``producer.triggers``).
tokensync's own transactions mark themselves (``producer.txmarks``) while they
write and record their audit entry themselves; an outbox row written by a
transaction without that mark came from plain SQL (a Laravel app), and this
trigger records it with actor ``sql`` and the seq it produced (on SQLite the
trigger always writes and the store's transactions take their rows back).
"""

from __future__ import annotations

from producer import audit_triggers_mysql
from producer.txmarks import AUDIT, pg_marked

__all__ = ["drop_statements", "install_statements"]

_ACTION = (
    "CASE NEW.op WHEN 'issued' THEN 'token.issue' WHEN 'revoked' THEN 'token.revoke'"
    " WHEN 'updated' THEN 'token.update' ELSE 'revoke.epoch' END"
)
_COLUMNS = "at_ms, actor_kind, actor, action, scope, token_id, tokenable_type, tokenable_id, seq"

_PG = [
    f"""
CREATE OR REPLACE FUNCTION tokensync_audit_sql() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT {pg_marked(AUDIT)} THEN
    INSERT INTO tokensync_audit ({_COLUMNS}, detail)
      VALUES (NEW.recorded_at_ms, 'sql', 'sql', {_ACTION},
              coalesce(NEW.scope, 'token:' || NEW.token_id::text), NEW.token_id,
              NEW.tokenable_type, NEW.tokenable_id, NEW.seq,
              json_build_object('db_user', current_user)::text);
  END IF;
  RETURN NEW;
END
$$""",
    "DROP TRIGGER IF EXISTS tokensync_outbox_audit ON tokensync_outbox",
    """
CREATE TRIGGER tokensync_outbox_audit AFTER INSERT ON tokensync_outbox
  FOR EACH ROW EXECUTE FUNCTION tokensync_audit_sql()""",
    "ALTER TABLE tokensync_outbox ENABLE ALWAYS TRIGGER tokensync_outbox_audit",
]

_SQLITE = [
    "DROP TRIGGER IF EXISTS tokensync_outbox_audit",
    f"""
CREATE TRIGGER tokensync_outbox_audit AFTER INSERT ON tokensync_outbox
BEGIN
  INSERT INTO tokensync_audit ({_COLUMNS})
    VALUES (NEW.recorded_at_ms, 'sql', 'sql', {_ACTION},
            coalesce(NEW.scope, 'token:' || NEW.token_id), NEW.token_id,
            NEW.tokenable_type, NEW.tokenable_id, NEW.seq);
END""",
]


def install_statements(dialect: str) -> list[str]:
    """The SQL that installs (or replaces) the audit trigger on ``dialect``."""
    if dialect in audit_triggers_mysql.DIALECTS:
        return audit_triggers_mysql.install_statements()
    if dialect == "postgresql":
        return list(_PG)
    if dialect == "sqlite":
        return list(_SQLITE)
    raise NotImplementedError(f"the audit trigger exists for postgresql and sqlite, not {dialect}")


def drop_statements(dialect: str) -> list[str]:
    """The SQL that removes the audit trigger (the migration's downgrade)."""
    if dialect in audit_triggers_mysql.DIALECTS:
        return audit_triggers_mysql.drop_statements()
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS tokensync_outbox_audit ON tokensync_outbox",
            "DROP FUNCTION IF EXISTS tokensync_audit_sql()",
        ]
    return ["DROP TRIGGER IF EXISTS tokensync_outbox_audit"]
