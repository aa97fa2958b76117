"""Database triggers that fill the outbox, for PostgreSQL and SQLite.

An insert into ``personal_access_tokens`` publishes *issued*, a delete
*revoked* (unless a mass revocation in the same transaction suppresses it:
``producer.txmarks``), a
change of anything but ``last_used_at``/``updated_at`` *updated*; a write to
``tokensync_epochs`` that moves an epoch publishes *epoch*. On PostgreSQL a
``TRUNCATE personal_access_tokens`` (which fires no row triggers) moves the global
epoch to the truncation's time in the same transaction. Rows a Laravel app
writes with plain SQL count exactly like ours. PostgreSQL also sends
``NOTIFY tokensync_outbox`` so the relay wakes at once. The PostgreSQL triggers are
``ENABLE ALWAYS``: they fire in ``session_replication_role = replica`` sessions too (a
seeder skipping foreign keys, ``pg_restore --disable-triggers``, logical replication).
"""

from __future__ import annotations

from producer import triggers_mysql
from producer.txmarks import SUPPRESS, pg_marked

__all__ = ["NOTIFY_CHANNEL", "drop_statements", "install_statements"]

NOTIFY_CHANNEL = "tokensync_outbox"

_OUTBOX_TOKEN_COLUMNS = (
    "kind, op, token_id, token_hash, tokenable_type, tokenable_id, name, abilities, "
    "expires_at, row_created_at, issued_at_ms, recorded_at_ms"
)

_PG = [
    """
CREATE OR REPLACE FUNCTION tokensync_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS $$
  SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$""",
    f"""
CREATE OR REPLACE FUNCTION tokensync_pat_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := tokensync_now_ms();
  issued bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO tokensync_token_meta (token_id, issued_at_ms) VALUES (NEW.id, now_ms)
      ON CONFLICT (token_id) DO UPDATE SET issued_at_ms = EXCLUDED.issued_at_ms;
    INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
      VALUES ('token', 'issued', NEW.id, NEW.token, NEW.tokenable_type, NEW.tokenable_id::text,
              NEW.name, NEW.abilities, NEW.expires_at, NEW.created_at, now_ms, now_ms);
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NEW;
  END IF;

  SELECT m.issued_at_ms INTO issued FROM tokensync_token_meta m WHERE m.token_id = OLD.id;
  -- A row older than the triggers: its created_at, never later than now (a created_at
  -- ahead of the clock must not make the row look issued after it was seen).
  IF issued IS NULL AND OLD.created_at IS NOT NULL AND isfinite(OLD.created_at) THEN
    issued := least(now_ms, greatest(0, floor(extract(epoch FROM OLD.created_at) * 1000)::bigint));
  END IF;
  issued := coalesce(issued, 0);

  IF TG_OP = 'DELETE' THEN
    DELETE FROM tokensync_token_meta WHERE token_id = OLD.id;
    IF NOT {pg_marked(SUPPRESS)} THEN
      INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
        VALUES ('token', 'revoked', OLD.id, OLD.token, OLD.tokenable_type,
                OLD.tokenable_id::text, OLD.name, OLD.abilities, OLD.expires_at,
                OLD.created_at, issued, now_ms);
      PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    END IF;
    RETURN OLD;
  END IF;

  -- UPDATE: only changes that matter to validation are published.
  IF NEW.token IS NOT DISTINCT FROM OLD.token
     AND NEW.abilities IS NOT DISTINCT FROM OLD.abilities
     AND NEW.expires_at IS NOT DISTINCT FROM OLD.expires_at
     AND NEW.name IS NOT DISTINCT FROM OLD.name
     AND NEW.tokenable_type IS NOT DISTINCT FROM OLD.tokenable_type
     AND NEW.tokenable_id IS NOT DISTINCT FROM OLD.tokenable_id
     AND NEW.created_at IS NOT DISTINCT FROM OLD.created_at THEN
    RETURN NEW;
  END IF;
  IF NEW.token IS DISTINCT FROM OLD.token THEN
    INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
      VALUES ('token', 'revoked', OLD.id, OLD.token, OLD.tokenable_type, OLD.tokenable_id::text,
              OLD.name, OLD.abilities, OLD.expires_at, OLD.created_at, issued, now_ms);
  END IF;
  INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
    VALUES ('token', 'updated', NEW.id, NEW.token, NEW.tokenable_type, NEW.tokenable_id::text,
            NEW.name, NEW.abilities, NEW.expires_at, NEW.created_at, issued, now_ms);
  PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
  RETURN NEW;
END
$$""",
    """
CREATE OR REPLACE FUNCTION tokensync_epoch_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.before_ms IS NOT DISTINCT FROM OLD.before_ms THEN
    RETURN NEW;
  END IF;
  INSERT INTO tokensync_outbox (kind, op, scope, before_ms, recorded_at_ms)
    VALUES ('epoch', 'epoch', NEW.scope, NEW.before_ms, tokensync_now_ms());
  PERFORM pg_notify('tokensync_outbox', '');
  RETURN NEW;
END
$$""",
    """
CREATE OR REPLACE FUNCTION tokensync_pat_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := tokensync_now_ms();
BEGIN
  -- Every row is gone without row triggers: one global epoch revokes them all (and the
  -- epoch trigger writes its outbox row), in the truncating transaction.
  DELETE FROM tokensync_token_meta;
  INSERT INTO tokensync_epochs (scope, before_ms, updated_at_ms)
    VALUES ('global', now_ms + 1, now_ms)
    ON CONFLICT (scope) DO UPDATE
      SET before_ms = greatest(tokensync_epochs.before_ms, EXCLUDED.before_ms),
          updated_at_ms = EXCLUDED.updated_at_ms;
  RETURN NULL;
END
$$""",
    "DROP TRIGGER IF EXISTS tokensync_pat_truncate ON personal_access_tokens",
    """
CREATE TRIGGER tokensync_pat_truncate
  AFTER TRUNCATE ON personal_access_tokens
  FOR EACH STATEMENT EXECUTE FUNCTION tokensync_pat_truncated()""",
    "ALTER TABLE personal_access_tokens ENABLE ALWAYS TRIGGER tokensync_pat_truncate",
    "DROP TRIGGER IF EXISTS tokensync_pat_outbox ON personal_access_tokens",
    """
CREATE TRIGGER tokensync_pat_outbox
  AFTER INSERT OR UPDATE OR DELETE ON personal_access_tokens
  FOR EACH ROW EXECUTE FUNCTION tokensync_pat_changed()""",
    "ALTER TABLE personal_access_tokens ENABLE ALWAYS TRIGGER tokensync_pat_outbox",
    "DROP TRIGGER IF EXISTS tokensync_epoch_outbox ON tokensync_epochs",
    """
CREATE TRIGGER tokensync_epoch_outbox
  AFTER INSERT OR UPDATE ON tokensync_epochs
  FOR EACH ROW EXECUTE FUNCTION tokensync_epoch_changed()""",
    "ALTER TABLE tokensync_epochs ENABLE ALWAYS TRIGGER tokensync_epoch_outbox",
]

# SQLite: milliseconds from strftime (seconds) and %f (SS.SSS), both of one statement's 'now'.
_SQLITE_NOW_MS = (
    "(CAST(strftime('%s', 'now') AS INTEGER) * 1000"
    " + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER))"
)
_SQLITE_ISSUED = (
    "coalesce((SELECT m.issued_at_ms FROM tokensync_token_meta m WHERE m.token_id = OLD.id),"
    f" min({_SQLITE_NOW_MS}, max(0, CAST(strftime('%s', OLD.created_at) AS INTEGER) * 1000)), 0)"
)
_CHANGED = (
    "NEW.token IS NOT OLD.token OR NEW.abilities IS NOT OLD.abilities"
    " OR NEW.expires_at IS NOT OLD.expires_at OR NEW.name IS NOT OLD.name"
    " OR NEW.tokenable_type IS NOT OLD.tokenable_type"
    " OR NEW.tokenable_id IS NOT OLD.tokenable_id OR NEW.created_at IS NOT OLD.created_at"
)

_SQLITE = [
    "DROP TRIGGER IF EXISTS tokensync_pat_inserted",
    f"""
CREATE TRIGGER tokensync_pat_inserted AFTER INSERT ON personal_access_tokens
BEGIN
  INSERT OR REPLACE INTO tokensync_token_meta (token_id, issued_at_ms)
    VALUES (NEW.id, {_SQLITE_NOW_MS});
  INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
    VALUES ('token', 'issued', NEW.id, NEW.token, NEW.tokenable_type,
            CAST(NEW.tokenable_id AS TEXT), NEW.name, NEW.abilities, NEW.expires_at,
            NEW.created_at, {_SQLITE_NOW_MS}, {_SQLITE_NOW_MS});
END""",
    "DROP TRIGGER IF EXISTS tokensync_pat_deleted",
    f"""
CREATE TRIGGER tokensync_pat_deleted AFTER DELETE ON personal_access_tokens
BEGIN
  INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
    SELECT 'token', 'revoked', OLD.id, OLD.token, OLD.tokenable_type,
           CAST(OLD.tokenable_id AS TEXT), OLD.name, OLD.abilities, OLD.expires_at,
           OLD.created_at, {_SQLITE_ISSUED}, {_SQLITE_NOW_MS};
  DELETE FROM tokensync_token_meta WHERE token_id = OLD.id;
END""",
    "DROP TRIGGER IF EXISTS tokensync_pat_updated",
    f"""
CREATE TRIGGER tokensync_pat_updated AFTER UPDATE ON personal_access_tokens
WHEN {_CHANGED}
BEGIN
  INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
    SELECT 'token', 'revoked', OLD.id, OLD.token, OLD.tokenable_type,
           CAST(OLD.tokenable_id AS TEXT), OLD.name, OLD.abilities, OLD.expires_at,
           OLD.created_at, {_SQLITE_ISSUED}, {_SQLITE_NOW_MS}
    WHERE NEW.token IS NOT OLD.token;
  INSERT INTO tokensync_outbox ({_OUTBOX_TOKEN_COLUMNS})
    VALUES ('token', 'updated', NEW.id, NEW.token, NEW.tokenable_type,
            CAST(NEW.tokenable_id AS TEXT), NEW.name, NEW.abilities, NEW.expires_at,
            NEW.created_at, {_SQLITE_ISSUED}, {_SQLITE_NOW_MS});
END""",
    "DROP TRIGGER IF EXISTS tokensync_epoch_inserted",
    f"""
CREATE TRIGGER tokensync_epoch_inserted AFTER INSERT ON tokensync_epochs
BEGIN
  INSERT INTO tokensync_outbox (kind, op, scope, before_ms, recorded_at_ms)
    VALUES ('epoch', 'epoch', NEW.scope, NEW.before_ms, {_SQLITE_NOW_MS});
END""",
    "DROP TRIGGER IF EXISTS tokensync_epoch_updated",
    f"""
CREATE TRIGGER tokensync_epoch_updated AFTER UPDATE ON tokensync_epochs
WHEN NEW.before_ms IS NOT OLD.before_ms
BEGIN
  INSERT INTO tokensync_outbox (kind, op, scope, before_ms, recorded_at_ms)
    VALUES ('epoch', 'epoch', NEW.scope, NEW.before_ms, {_SQLITE_NOW_MS});
END""",
]

_PG_DROP = [
    "DROP TRIGGER IF EXISTS tokensync_pat_truncate ON personal_access_tokens",
    "DROP TRIGGER IF EXISTS tokensync_pat_outbox ON personal_access_tokens",
    "DROP TRIGGER IF EXISTS tokensync_epoch_outbox ON tokensync_epochs",
    "DROP FUNCTION IF EXISTS tokensync_pat_truncated()",
    "DROP FUNCTION IF EXISTS tokensync_pat_changed()",
    "DROP FUNCTION IF EXISTS tokensync_epoch_changed()",
    "DROP FUNCTION IF EXISTS tokensync_now_ms()",
]
_SQLITE_DROP = [s for s in _SQLITE if s.startswith("DROP TRIGGER")]


def install_statements(dialect: str) -> list[str]:
    """The SQL that installs (or replaces) the outbox triggers on ``dialect``."""
    if dialect in triggers_mysql.DIALECTS:
        return triggers_mysql.install_statements()
    if dialect == "postgresql":
        return list(_PG)
    if dialect == "sqlite":
        return list(_SQLITE)
    raise NotImplementedError(f"outbox triggers exist for postgresql and sqlite, not {dialect}")


def drop_statements(dialect: str) -> list[str]:
    """The SQL that removes the triggers again (the migration's downgrade)."""
    if dialect in triggers_mysql.DIALECTS:
        return triggers_mysql.drop_statements()
    return list(_PG_DROP if dialect == "postgresql" else _SQLITE_DROP)
