"""The relay lease: which of several relays publishes, and the fencing epoch it stamps.

One row of ``tokensync_relay_lease`` per lease name. A relay takes the lease when it has
expired, with one conditional UPDATE that also bumps ``epoch`` (the fencing token), and
renews it with one conditional UPDATE naming itself and its epoch. A new epoch is the old
one plus one, but never below the store's clock in milliseconds: a lease row deleted by
hand or restored from an older backup must not start again below an epoch the regions
already saw (they would refuse every record of the new holder as fenced). Expiry is by the
STORE's clock (``producer.clock.db_now_ms``), never a relay host's: a relay whose host
clock is wrong, or that was paused, cannot keep a lease the store says has run out.

The database serialises the UPDATEs on the row (a row lock on PostgreSQL and
MariaDB/MySQL, the write lock on SQLite), so of two standbys only one takes an expired
lease; and ``renew`` inside the transaction that marks rows published makes "I still
hold the lease" and "these rows are published" one atomic fact. A relay that lost the
lease may still have records in flight: they carry its older epoch, and regions refuse
them once they saw a newer one (``workers.handlers``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from producer.clock import db_now_ms
from shared.errors import TokenSyncError

__all__ = ["LeaseLostError", "LeaseView", "RelayLease", "holder_id"]

LEASE_TABLE = "tokensync_relay_lease"
DEFAULT_NAME = "relay"
#: the longest TTL a lease may have (``tokensync relay --lease-ttl`` allows up to 600 s). A
#: lease that expires further ahead than this was stamped before the store's clock jumped
#: back: it counts as expired, so a dead holder's lease is not kept for the jump's length.
MAX_TTL_MS = 600_000

_table = sa.table(
    LEASE_TABLE,
    sa.column("name", sa.String),
    sa.column("holder", sa.String),
    sa.column("epoch", sa.BigInteger),
    sa.column("expires_at_ms", sa.BigInteger),
    sa.column("acquired_at_ms", sa.BigInteger),
)


class LeaseLostError(TokenSyncError):
    """Raised when a relay finds it no longer holds the relay lease (it must stop publishing)."""


def holder_id() -> str:
    """A holder id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:255]


@dataclass(frozen=True, slots=True)
class LeaseView:
    """The lease row as the store has it, with the store's clock at reading."""

    holder: str
    epoch: int
    expires_at_ms: int
    now_ms: int

    @property
    def expired(self) -> bool:
        """Whether a standby may take the lease now (see ``MAX_TTL_MS``)."""
        return not self.now_ms < self.expires_at_ms <= self.now_ms + MAX_TTL_MS


class RelayLease:
    """One relay's side of the lease: take it when free, renew it, check it, give it back.

    ``epoch`` is the fencing epoch while held, else None. ``now_ms`` reads the store's
    clock on a connection (tests pass a fake clock).
    """

    def __init__(
        self,
        engine: sa.Engine,
        holder: str,
        *,
        name: str = DEFAULT_NAME,
        ttl_ms: int = 3000,
        now_ms: Callable[[sa.Connection], int] = db_now_ms,
    ) -> None:
        if not 0 < ttl_ms <= MAX_TTL_MS:
            raise ValueError(f"a lease needs a TTL of 1 to {MAX_TTL_MS} ms")
        self._engine = engine
        self.holder = holder
        self.name = name
        self.ttl_ms = ttl_ms
        self._now_ms = now_ms
        self.epoch: int | None = None

    @property
    def held(self) -> bool:
        """Whether this relay believes it holds the lease (``check`` asks the store)."""
        return self.epoch is not None

    def acquire(self) -> int | None:
        """Renew the lease if held, else take it if it has expired; the epoch held after,
        or None (another relay holds a live lease: stay a standby)."""
        if self.epoch is not None:
            with self._engine.begin() as conn:
                if self.renew(conn):
                    return self.epoch
            return None
        with self._engine.begin() as conn:
            self._ensure_row(conn)
            now = self._now_ms(conn)
            taken = conn.execute(
                sa.update(_table)
                .where(
                    _table.c.name == self.name,
                    sa.or_(
                        _table.c.expires_at_ms <= now,
                        _table.c.expires_at_ms > now + MAX_TTL_MS,  # the clock went back
                    ),
                )
                .values(
                    holder=self.holder,
                    # never below the store's clock: an epoch survives the lease row
                    # being deleted or restored from an older backup (regions fence by it)
                    epoch=sa.case(
                        (_table.c.epoch + 1 > now, _table.c.epoch + 1),
                        else_=sa.literal(now, sa.BigInteger),
                    ),
                    expires_at_ms=now + self.ttl_ms,
                    acquired_at_ms=now,
                )
            )
            if taken.rowcount != 1:
                return None
            epoch = conn.execute(
                sa.select(_table.c.epoch).where(
                    _table.c.name == self.name, _table.c.holder == self.holder
                )
            ).scalar_one()
        self.epoch = int(epoch)
        return self.epoch

    def renew(self, conn: sa.Connection) -> bool:
        """Extend the lease by the TTL inside the caller's transaction, if this relay still
        holds it (its holder id and epoch); else forget it and return False. Also when it
        ran out while nobody took it: no newer epoch exists, so nothing needs fencing."""
        if self.epoch is None:
            return False
        now = self._now_ms(conn)
        renewed = conn.execute(
            sa.update(_table)
            .where(
                _table.c.name == self.name,
                _table.c.holder == self.holder,
                _table.c.epoch == self.epoch,
            )
            .values(expires_at_ms=now + self.ttl_ms)
        )
        if renewed.rowcount != 1:
            self.epoch = None
            return False
        return True

    def check(self) -> bool:
        """Ask the store whether this relay holds a live lease (read only): its holder id,
        its epoch, and not expired by the store's clock. Forgets the lease if another relay
        took it; an expired lease nobody took is renewed."""
        if self.epoch is None:
            return False
        view = self.view()
        if view.holder != self.holder or view.epoch != self.epoch:
            self.epoch = None
            return False
        if view.expired:
            return self.acquire() is not None
        return True

    def release(self) -> None:
        """Give the lease back (a clean stop): a standby takes it at its next poll instead
        of waiting for the TTL. Only this holder's epoch is released."""
        if self.epoch is None:
            return
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(_table)
                .where(
                    _table.c.name == self.name,
                    _table.c.holder == self.holder,
                    _table.c.epoch == self.epoch,
                )
                .values(expires_at_ms=0)
            )
        self.epoch = None

    def view(self) -> LeaseView:
        """The lease row and the store's clock (a free lease reads as holder '')."""
        with self._engine.connect() as conn:
            now = self._now_ms(conn)
            row = conn.execute(
                sa.select(_table.c.holder, _table.c.epoch, _table.c.expires_at_ms).where(
                    _table.c.name == self.name
                )
            ).first()
        if row is None:
            return LeaseView("", 0, 0, now)
        return LeaseView(str(row.holder), int(row.epoch), int(row.expires_at_ms), now)

    def _ensure_row(self, conn: sa.Connection) -> None:
        """Create the lease's row (expired, epoch 0) if a name other than the migrated
        one is used; a concurrent insert of the same name is fine."""
        exists = conn.execute(sa.select(_table.c.epoch).where(_table.c.name == self.name)).first()
        if exists is not None:
            return
        columns = "(name, holder, epoch, expires_at_ms, acquired_at_ms)"
        values = "VALUES (:name, '', 0, 0, 0)"
        dialect = conn.dialect.name
        if dialect == "postgresql":
            sql = f"INSERT INTO {LEASE_TABLE} {columns} {values} ON CONFLICT DO NOTHING"
        elif dialect == "sqlite":
            sql = f"INSERT OR IGNORE INTO {LEASE_TABLE} {columns} {values}"
        else:  # MariaDB / MySQL
            sql = f"INSERT IGNORE INTO {LEASE_TABLE} {columns} {values}"
        conn.execute(sa.text(sql), {"name": self.name})  # a concurrent insert is fine
