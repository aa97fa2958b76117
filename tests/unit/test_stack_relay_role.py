"""``stack status`` reads a relay's role from the last role line of its JSON log."""

from __future__ import annotations

from pathlib import Path

from stack.relay_role import RelayRole, relay_role


def test_the_last_role_line_of_a_relays_log_is_its_role(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    assert relay_role(log) is None
    log.write_text(
        '{"event": "relay_started", "batch_size": 5000}\n'
        '{"event": "relay_active", "epoch": 3, "holder": "h:1:a"}\n'
        '{"event": "batch_published", "note": "relay_standby in a value is no role line"}\n'
    )
    assert RelayRole("active", 3) == relay_role(log)
    with log.open("a") as f:
        f.write('{"event": "relay_standby", "reason": "x", "epoch": 3}\nnot json relay_active\n')
    assert RelayRole("standby", 3) == relay_role(log)
