"""A throwaway PostgreSQL server from the distribution's binaries (for tests and benchmarks).

``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` system user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared.errors import PrerequisiteError, StackError
from stack.process import ProcessRecord, log_hint, port_open, start_process, wait_until

__all__ = ["PostgresServer", "find_pg_bin"]


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres`` (newest installed major version)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for folder in reversed(candidates):
        if Path(folder, "initdb").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    raise PrerequisiteError("PostgreSQL server binaries not found: apt-get install postgresql")


@dataclass(frozen=True)
class PostgresServer:
    """One PostgreSQL cluster in ``data_dir`` listening on loopback ``port``."""

    data_dir: Path
    port: int
    user: str = "tokensync"
    password: str = "tokensync"  # noqa: S105 - a throwaway server on loopback

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``tokensync`` database (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/tokensync"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.data_dir.parent / "postgres.log"

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError as e:
            raise PrerequisiteError("running as root needs the 'postgres' system user") from e
        return ["runuser", "-u", "postgres", "--"]

    def start(self) -> ProcessRecord:
        """initdb (once) and start the server; returns at once (see ``wait_ready``)."""
        bindir = find_pg_bin()
        prefix = self._as_owner()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if prefix:
            shutil.chown(self.data_dir.parent, user="postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = self.data_dir.parent / "pwfile"
            pwfile.write_text(self.password + "\n")
            if prefix:
                shutil.chown(pwfile, user="postgres")
            cmd = [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(f"initdb failed: {result.stderr.strip()[-300:]}")
        argv = [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.data_dir.parent}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        return start_process("postgres", argv, self.log_file, port=self.port)

    def wait_ready(self, record: ProcessRecord, timeout_s: float = 30.0) -> None:
        """Block until the server accepts connections, then create the database."""
        wait_until(
            lambda: port_open(self.port) or not record.alive, timeout_s, "postgres", self.log_file
        )
        if not record.alive:
            raise StackError(f"postgres exited during start-up{log_hint(self.log_file)}")
        env = {**os.environ, "PGPASSWORD": self.password}
        conn = ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
        bindir = find_pg_bin()
        wait_until(
            lambda: (
                subprocess.run(
                    [str(bindir / "pg_isready"), *conn, "-d", "postgres", "-q"], check=False
                ).returncode
                == 0
            ),
            timeout_s,
            "postgres accepting logins",
            self.log_file,
        )
        result = subprocess.run(
            [str(bindir / "createdb"), *conn, "tokensync"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise StackError(f"createdb failed: {result.stderr.strip()[-300:]}")
