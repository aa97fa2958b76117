"""The stack hands out free local ports (no server involved)."""

from __future__ import annotations

from stack import free_port


def test_free_ports_are_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
