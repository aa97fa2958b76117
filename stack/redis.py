"""A ``redis-server`` per region, on loopback, without persistence (optionally a read
replica of another one: ``replica_of``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from shared.errors import PrerequisiteError, StackError
from stack.process import ProcessRecord, log_hint, port_open, start_process, wait_until

__all__ = ["RedisServer"]


@dataclass(frozen=True)
class RedisServer:
    """One Redis server process; ``databases`` sets how many logical DBs it offers."""

    name: str
    data_dir: Path
    port: int
    databases: int = 16
    replica_of: int | None = None  # the port of the primary on loopback it replicates

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        """Where the server writes its log."""
        return self.data_dir / f"{self.name}.log"

    def start(self) -> ProcessRecord:
        """Start the server (returns at once; see ``wait_ready``)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise PrerequisiteError(
                "redis-server not found on PATH: install it (apt-get install redis-server, "
                "brew install redis)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--databases",
            str(self.databases),
            "--loglevel",
            "warning",
            # replicas sync at once (no 5 s wait for more replicas), and diskless: no RDB
            "--repl-diskless-sync-delay",
            "0",
        ]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return start_process(self.name, argv, self.log_file, port=self.port)

    def wait_ready(self, record: ProcessRecord, timeout_s: float = 15.0) -> None:
        """Block until the server accepts connections."""
        wait_until(
            lambda: port_open(self.port) or not record.alive,
            timeout_s,
            f"redis-server {self.name}",
            self.log_file,
        )
        if not record.alive:
            raise StackError(f"redis-server {self.name} exited{log_hint(self.log_file)}")
