"""The audit trigger of ``producer.audit_triggers`` for MySQL 8 and MariaDB 10.6+."""

from __future__ import annotations

from producer.txmarks import AUDIT, mysql_marked

__all__ = ["DIALECTS", "drop_statements", "install_statements"]

DIALECTS = frozenset({"mysql", "mariadb"})

_ACTION = (
    "CASE NEW.op WHEN 'issued' THEN 'token.issue' WHEN 'revoked' THEN 'token.revoke'"
    " WHEN 'updated' THEN 'token.update' ELSE 'revoke.epoch' END"
)
_COLUMNS = "at_ms, actor_kind, actor, action, scope, token_id, tokenable_type, tokenable_id, seq"

_INSTALL = f"""
CREATE TRIGGER tokensync_outbox_audit AFTER INSERT ON tokensync_outbox FOR EACH ROW
BEGIN
  IF NOT {mysql_marked(AUDIT)} THEN
    INSERT INTO tokensync_audit ({_COLUMNS}, detail)
      VALUES (NEW.recorded_at_ms, 'sql', 'sql', {_ACTION},
              COALESCE(NEW.scope, CONCAT('token:', NEW.token_id)), NEW.token_id,
              NEW.tokenable_type, NEW.tokenable_id, NEW.seq,
              JSON_OBJECT('db_user', CURRENT_USER()));
  END IF;
END"""


def drop_statements() -> list[str]:
    """The SQL that removes the audit trigger."""
    return ["DROP TRIGGER IF EXISTS tokensync_outbox_audit"]


def install_statements() -> list[str]:
    """The SQL that installs (or replaces) the audit trigger."""
    return [*drop_statements(), _INSTALL]
