"""A throwaway MariaDB server from Debian's ``mariadb-server`` binaries (tests, benchmarks).

``mariadbd`` refuses to run as root, so as root it runs as the ``mysql`` system
user the package creates. The server listens on loopback only; its root account
is reached over the data directory's socket to create the ``tokensync`` user.
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

__all__ = ["MariadbServer", "find_mariadbd"]

_SERVER_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld")


def find_mariadbd() -> Path:
    """The ``mariadbd`` binary (Debian's ``mariadb-server`` package)."""
    for candidate in _SERVER_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("mariadbd")
    if found is not None:
        return Path(found)
    raise PrerequisiteError("MariaDB server binaries not found: apt-get install mariadb-server")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name.replace("mariadb", "mysql"))
    if found is None:
        raise PrerequisiteError(f"{name} not found: apt-get install mariadb-server")
    return found


@dataclass(frozen=True)
class MariadbServer:
    """One MariaDB server in ``data_dir`` listening on loopback ``port``."""

    data_dir: Path
    port: int
    user: str = "tokensync"
    password: str = "tokensync"  # noqa: S105 - a throwaway server on loopback

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``tokensync`` database (PyMySQL driver)."""
        return f"mariadb+pymysql://{self.user}:{self.password}@127.0.0.1:{self.port}/tokensync"

    @property
    def socket(self) -> Path:
        """The server's unix socket (root logs in there)."""
        return self.data_dir.parent / "mariadb.sock"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.data_dir.parent / "mariadb.log"

    def _owner(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("mysql")
        except KeyError as e:
            raise PrerequisiteError("running as root needs the 'mysql' system user") from e
        return "mysql"

    def _common(self) -> list[str]:
        return ["--no-defaults", f"--datadir={self.data_dir}"]

    def start(self) -> ProcessRecord:
        """Install the system tables (once) and start the server (see ``wait_ready``)."""
        server = find_mariadbd()
        owner = self._owner()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if owner:
            shutil.chown(self.data_dir.parent, user=owner)
            shutil.chown(self.data_dir, user=owner)
        user = [f"--user={owner}"] if owner else []
        if not (self.data_dir / "mysql").exists():
            cmd = [
                _tool("mariadb-install-db"),
                *self._common(),
                *user,
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(
                    f"mariadb-install-db failed: {(result.stderr or result.stdout).strip()[-300:]}"
                )
        argv = [
            str(server),
            *self._common(),
            *user,
            "--bind-address=127.0.0.1",
            f"--port={self.port}",
            f"--socket={self.socket}",
            f"--pid-file={self.data_dir.parent / 'mariadb.pid'}",
            "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=32M",
            "--max-connections=300",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--skip-log-bin",
            "--performance-schema=OFF",
        ]
        return start_process("mariadbd", argv, self.log_file, port=self.port)

    def root_sql(self, sql: str) -> str:
        """Run ``sql`` as the server's root over its socket; stdout."""
        result = subprocess.run(
            [_tool("mariadb"), "--no-defaults", f"--socket={self.socket}", "-uroot", "-Ne", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"mariadb client failed: {result.stderr.strip()[-300:]}")
        return result.stdout

    def wait_ready(self, record: ProcessRecord, timeout_s: float = 60.0) -> None:
        """Block until the server accepts connections, then create the user and database.

        The user may create and drop databases (tests take one each) and triggers."""
        wait_until(
            lambda: port_open(self.port) or not record.alive, timeout_s, "mariadbd", self.log_file
        )
        if not record.alive:
            raise StackError(f"mariadbd exited during start-up{log_hint(self.log_file)}")
        self.root_sql(
            f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}';"
            f" GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'127.0.0.1';"
            " CREATE DATABASE IF NOT EXISTS tokensync CHARACTER SET utf8mb4;"
            " FLUSH PRIVILEGES;"
        )
