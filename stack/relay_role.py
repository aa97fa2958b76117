"""What a stack's relay says it is doing: the lease holder (``active``) or a ``standby``.

Read from the relay's own JSON log (its last ``relay_active`` / ``relay_standby`` /
``relay_lease_released`` line), so that ``stack status`` needs neither the store nor a
metrics port; the relay's ``tokensync_relay_active`` gauge says the same to Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["RelayRole", "relay_role"]

_EVENTS = {
    b'"relay_active"': "active",
    b'"relay_standby"': "standby",
    b'"relay_lease_released"': "stopping",
}
_TAIL_BYTES = 4 << 20  # role lines are rare among batch lines; look this far back at most


@dataclass(frozen=True)
class RelayRole:
    """A relay's last stated role and the fencing epoch it named (None: unknown)."""

    role: str
    epoch: int | None


def relay_role(log: Path) -> RelayRole | None:
    """The last role the relay logged in ``log``; None before it said one."""
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        for marker, role in _EVENTS.items():
            if marker not in line:
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict) or data.get("event") != marker.strip(b'"').decode():
                continue
            epoch = data.get("epoch")
            return RelayRole(role, epoch if type(epoch) is int else None)
    return None
