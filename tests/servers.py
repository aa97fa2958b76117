"""Where the test suite gets its real servers: environment, Docker, or local binaries.

Each kind (Kafka, Redis, PostgreSQL, MariaDB/MySQL) is taken, in order, from an
environment variable (``TOKENSYNC_TEST_KAFKA``, ``TOKENSYNC_TEST_REDIS``,
``TOKENSYNC_TEST_POSTGRES``, ``TOKENSYNC_TEST_MYSQL``), from a container when a
Docker engine answers a ping (not MariaDB), or from a server this module starts on a
free port with the same code as ``tokensync stack up`` (MariaDB: Debian's
``mariadb-server`` binaries). Local servers are stopped by pid at the end.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import StackError
from stack import (
    KafkaBroker,
    KafkaJars,
    PostgresServer,
    ProcessRecord,
    RedisServer,
    default_cache_dir,
    free_port,
    stop_pid,
)
from stack.mariadb import MariadbServer

KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7-alpine"
POSTGRES_IMAGE = "postgres:16-alpine"
REDIS_DATABASES = 256

#: The suite's own ``TOKENSYNC_TEST_*`` variables, read once at import; ``conftest`` then
#: removes them from the environment, so the code under test (which rejects unknown
#: ``TOKENSYNC_*`` settings, as it should) never sees them.
TEST_ENV = {k: v for k, v in os.environ.items() if k.startswith("TOKENSYNC_TEST_")}


@functools.cache
def docker_engine_answers() -> bool:
    """True only when a Docker engine answers ``GET /_ping`` (the client alone is not enough)."""
    if TEST_ENV.get("TOKENSYNC_TEST_NO_DOCKER"):
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(3)
            with sock:
                sock.connect(host[len("unix://") :])
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(256)
        if host.startswith("tcp://"):
            hostname, _, port = host[len("tcp://") :].rpartition(":")
            with socket.create_connection((hostname, int(port)), timeout=3) as conn:
                conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in conn.recv(256)
    except (OSError, ValueError):
        return False
    return False


@dataclass
class Servers:
    """Endpoints of the session's servers and how to stop what we started."""

    root: Path
    processes: list[ProcessRecord] = field(default_factory=list)
    containers: list[Any] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        """Stop exactly the processes and containers this session started."""
        for record in reversed(self.processes):
            stop_pid(record.pid, record.argv[0] if record.argv else None)
        for container in reversed(self.containers):
            with contextlib.suppress(Exception):
                container.stop()

    # --- Kafka --------------------------------------------------------------------------
    def kafka(self) -> str:
        """A bootstrap ``host:port`` of a Kafka 4.x broker."""
        if env := TEST_ENV.get("TOKENSYNC_TEST_KAFKA"):
            self.sources["kafka"] = "environment"
            return env
        if docker_engine_answers():
            self.sources["kafka"] = "docker"
            return self._kafka_container()
        self.sources["kafka"] = "local jars"
        broker = KafkaBroker(
            KafkaJars(default_cache_dir()), self.root / "kafka", free_port(), free_port(), "384m"
        )
        record = broker.start()
        self.processes.append(record)
        broker.wait_ready(record)
        return broker.bootstrap

    def _kafka_container(self) -> str:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        port = free_port()
        container = (
            DockerContainer(KAFKA_IMAGE)
            .with_bind_ports(9092, port)
            .with_env("KAFKA_NODE_ID", "1")
            .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
            .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
            .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
            )
            .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        )
        container.start()
        self.containers.append(container)
        wait_for_logs(container, "Kafka Server started", timeout=120)
        return f"127.0.0.1:{port}"

    # --- Redis --------------------------------------------------------------------------
    def redis(self, name: str = "redis") -> tuple[str, int]:
        """``(host, port)`` of a Redis server; local ones offer 256 databases."""
        if name == "redis" and (env := TEST_ENV.get("TOKENSYNC_TEST_REDIS")):
            self.sources["redis"] = "environment"
            from urllib.parse import urlsplit

            parts = urlsplit(env)
            return parts.hostname or "127.0.0.1", parts.port or 6379
        if docker_engine_answers():
            self.sources.setdefault("redis", "docker")
            from testcontainers.redis import RedisContainer

            container = RedisContainer(REDIS_IMAGE)
            container.start()
            self.containers.append(container)
            return (
                container.get_container_host_ip(),
                int(container.get_exposed_port(6379)),
            )
        self.sources.setdefault("redis", "local binary")
        for attempt in range(3):
            # a free port may be taken by someone else before redis binds it: try another
            data_dir = self.root / f"{name}-{attempt}"
            server = RedisServer(name, data_dir, free_port(), REDIS_DATABASES)
            record = server.start()
            self.processes.append(record)
            try:
                server.wait_ready(record)
            except StackError:
                if attempt == 2 or "in use" not in server.log_file.read_text(errors="replace"):
                    raise
                continue
            return "127.0.0.1", server.port
        raise AssertionError("unreachable")

    # --- PostgreSQL ---------------------------------------------------------------------
    def postgres(self) -> str:
        """A SQLAlchemy URL (psycopg 3) of a database the tests may create schemas in."""
        if env := TEST_ENV.get("TOKENSYNC_TEST_POSTGRES"):
            self.sources["postgres"] = "environment"
            return env
        if docker_engine_answers():
            self.sources["postgres"] = "docker"
            from testcontainers.postgres import PostgresContainer

            container = PostgresContainer(POSTGRES_IMAGE, driver="psycopg")
            container.start()
            self.containers.append(container)
            url: str = container.get_connection_url()
            return url
        self.sources["postgres"] = "local binary"
        server = PostgresServer(self.root / "pg" / "data", free_port())
        record = server.start()
        self.processes.append(record)
        server.wait_ready(record)
        return server.url

    # --- MariaDB / MySQL ----------------------------------------------------------------
    def mysql(self) -> str:
        """A SQLAlchemy URL (PyMySQL) of a MySQL 8 / MariaDB 10.6+ server whose user may
        create databases. Docker is not used: Debian's mariadb-server binaries are."""
        if env := TEST_ENV.get("TOKENSYNC_TEST_MYSQL"):
            self.sources["mysql"] = "environment"
            return env
        self.sources["mysql"] = "local binary"
        for attempt in range(3):
            server = MariadbServer(self.root / f"mariadb-{attempt}" / "data", free_port())
            record = server.start()
            self.processes.append(record)
            try:
                server.wait_ready(record)
            except StackError:
                if attempt == 2:
                    raise
                continue
            return server.url
        raise AssertionError("unreachable")


@contextlib.contextmanager
def session_servers(root: Path) -> Iterator[Servers]:
    """Servers for one test session, closed at its end."""
    servers = Servers(root)
    try:
        yield servers
    finally:
        servers.close()


class DedicatedKafka:
    """A broker of one test's own, from the local jars, that the test may stop and restart."""

    def __init__(self, root: Path) -> None:
        self.broker = KafkaBroker(
            KafkaJars(default_cache_dir()), root / "kafka", free_port(), free_port(), "384m"
        )
        self.record: ProcessRecord | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self) -> None:
        self.record = self.broker.start()
        self.broker.wait_ready(self.record)

    def stop(self, kill: bool = False) -> None:
        if self.record is not None:
            if kill:
                os.kill(self.record.pid, 9)
            stop_pid(self.record.pid, self.record.argv[0])
            self.record = None
