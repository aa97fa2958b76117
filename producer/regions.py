"""The registered regions: a name and a Redis URL each, in the store so every producer
process (relay, API, CLI) sees the same list."""

from __future__ import annotations

import sqlalchemy as sa

from producer import audit as audit_log
from producer.audit import AuditContext
from producer.models import REGIONS
from producer.store_core import StoreCore
from shared.errors import NotFoundError, UsageError
from shared.settings import Region

__all__ = ["Regions"]


class Regions(StoreCore):
    """The store's register of regions."""

    def add_region(self, region: Region, *, audit: AuditContext | None = None) -> None:
        """Register a region (name and Redis URL); a name is registered once."""
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            exists = conn.execute(
                sa.select(REGIONS.c.name).where(REGIONS.c.name == region.name)
            ).first()
            if exists is not None:
                raise UsageError(f"region {region.name!r} is already registered")
            conn.execute(
                REGIONS.insert().values(
                    name=region.name, redis_url=region.spec, added_at_ms=self.now_ms(conn)
                )
            )
            self._audited(
                conn, marker, audit, "region.add", seq=None, scope=f"region:{region.name}"
            )

    def remove_region(self, name: str, *, audit: AuditContext | None = None) -> None:
        """Forget a region, or NotFoundError."""
        with self._tx() as conn:
            marker = audit_log.begin(conn)
            if not conn.execute(REGIONS.delete().where(REGIONS.c.name == name)).rowcount:
                raise NotFoundError(f"no region named {name!r}")
            self._audited(conn, marker, audit, "region.remove", seq=None, scope=f"region:{name}")

    def regions(self) -> list[Region]:
        """The registered regions, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(REGIONS).order_by(REGIONS.c.name)).all()
        return [Region(r.name, r.redis_url) for r in rows]
