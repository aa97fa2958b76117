"""The relay's side of failover: when to take or renew the relay lease, what it logs and
the gauges it sets, the fencing header, and the checks before producing and marking.

``producer.relay_lease`` is the lease in the store; ``producer.relay`` asks this module
whether it may publish (``step``, ``confirm``, ``renew_in``) and drops its producer when
it may not. Without a lease (one relay, as before) every answer is yes and no header is
stamped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

import sqlalchemy as sa

from producer.relay_lease import LeaseLostError, RelayLease
from shared.errors import StoreError
from shared.events import fence_header
from shared.logs import get_logger
from shared.metrics import RELAY_ACTIVE, RELAY_FENCING_EPOCH

__all__ = ["Failover", "Step", "since_boot"]

log = get_logger(__name__)


class Step(Enum):
    """What one ``Failover.step`` found."""

    ACTIVE = "active"  # holds the lease (or runs without one)
    TOOK_OVER = "took_over"  # has just taken the lease: heartbeat every partition now
    STANDBY = "standby"  # another relay holds a live lease
    LOST = "lost"  # held it, and the store refused the renewal: stop publishing now


def since_boot() -> float:
    """Seconds on a clock that never goes back and counts a suspended host (Linux's
    ``CLOCK_BOOTTIME``; ``time.monotonic`` elsewhere)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.monotonic() if boottime is None else time.clock_gettime(boottime)


class Failover:
    """One relay's view of the lease, renewed every ``renew_interval_s`` of ``clock``.

    ``confirm`` (before each produce) asks the store only when the last renewal the store
    accepted began a third of the TTL ago or more on ``monotonic``: a renewal sets the
    expiry to the store's now plus the TTL, so within a third of it no other relay can
    have taken the lease by the rules of ``producer.relay_lease``. ``time.monotonic``
    keeps counting while a process is stopped (SIGSTOP), so a resumed relay asks again;
    on Linux the clock is ``CLOCK_BOOTTIME``, which also counts a suspended host (a
    suspended VM or laptop), where ``monotonic`` stops. What an operator does to the lease
    row by hand inside that window, or a store clock that jumps forward, is still fenced:
    the next mark renews (and refuses to mark), and regions refuse the older epoch.
    """

    def __init__(
        self,
        lease: RelayLease | None,
        clock: Callable[[], float],
        renew_interval_s: float,
        monotonic: Callable[[], float] = since_boot,
    ) -> None:
        self.lease = lease
        self._clock = clock
        self._monotonic = monotonic
        self._renew_interval_s = renew_interval_s
        self._renewed = -float("inf")
        self._confirmed = -float("inf")  # ``monotonic`` when an accepted renewal began
        self.epoch_held: int | None = None  # the epoch last held (logs)
        self._standby_logged = False

    @property
    def active(self) -> bool:
        """Whether this relay may publish: it holds the lease, or runs without one."""
        return self.lease is None or self.lease.held

    def step(self) -> Step:
        """Take or renew the lease when due (StoreError when the store does not answer)."""
        lease = self.lease
        if lease is None:
            return Step.ACTIVE
        try:
            began = self._monotonic()
            if lease.held:
                if self._clock() - self._renewed < self._renew_interval_s:
                    return Step.ACTIVE
                if lease.acquire() is not None:
                    self._renewed = self._clock()
                    self._confirmed = began
                    return Step.ACTIVE
                return Step.LOST
            epoch = lease.acquire()
            if epoch is None:
                self._announce_standby(lease)
                return Step.STANDBY
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"taking or renewing the relay lease failed: {e}") from e
        self._standby_logged = False
        self._renewed = self._clock()
        self._confirmed = began
        self.epoch_held = epoch
        RELAY_ACTIVE.set(1)
        RELAY_FENCING_EPOCH.set(epoch)
        log.info("relay_active", epoch=epoch, holder=lease.holder)
        return Step.TOOK_OVER

    def _announce_standby(self, lease: RelayLease) -> None:
        if self._standby_logged:
            return
        self._standby_logged = True
        view = lease.view()
        RELAY_ACTIVE.set(0)
        log.info(
            "relay_standby",
            reason="another relay holds the lease",
            active_holder=view.holder,
            epoch=view.epoch,
        )

    def confirm(self) -> None:
        """Before each produce: LeaseLostError unless this relay holds the lease, by a
        renewal younger than a third of the TTL, else by asking the store."""
        lease = self.lease
        if lease is None:
            return
        if lease.held and self._monotonic() - self._confirmed < lease.ttl_ms / 3000:
            return
        try:
            held = lease.check()
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"checking the relay lease failed: {e}") from e
        if not held:
            raise LeaseLostError("another relay holds the relay lease")

    def renew_in(self, conn: sa.Connection) -> None:
        """Inside the transaction that marks rows published: renew, or LeaseLostError.
        The renewal counts for ``confirm`` only once ``renewed`` says it committed."""
        if self.lease is not None and not self.lease.renew(conn):
            raise LeaseLostError("lost the relay lease before marking rows published")

    def renewed(self, began: float) -> None:
        """The transaction of ``renew_in`` that began at ``began`` (``monotonic``) committed."""
        if self.lease is not None and self.lease.held:
            self._confirmed = max(self._confirmed, began)

    def now(self) -> float:
        """``monotonic``: when a renewal begins (see ``renewed``)."""
        return self._monotonic()

    def fence(self) -> list[tuple[str, bytes]]:
        """The fencing header of this relay's records (none without a lease)."""
        epoch = None if self.lease is None else self.lease.epoch
        return [] if epoch is None else [fence_header(epoch)]

    def stand_by(self, why: str, last_seq: int) -> None:
        """Forget the lease (the caller drops its producer) and say so."""
        if self.lease is not None:
            self.lease.epoch = None
        self._confirmed = -float("inf")
        RELAY_ACTIVE.set(0)
        self._standby_logged = True
        log.warning("relay_standby", reason=why, epoch=self.epoch_held, last_seq=last_seq)

    def release(self) -> None:
        """On a clean stop, give the lease back: a standby takes over at its next poll."""
        if self.lease is None or not self.lease.held:
            return
        epoch = self.lease.epoch
        try:
            self.lease.release()
        except sa.exc.SQLAlchemyError:  # it expires by itself within its TTL
            log.warning("relay_lease_release_failed", epoch=epoch, exc_info=True)
            return
        RELAY_ACTIVE.set(0)
        log.info("relay_lease_released", epoch=epoch)
