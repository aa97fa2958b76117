"""A throwaway tokensync deployment for one benchmark run: real Kafka, Redis, PostgreSQL.

Servers are started from the local binaries (the same code as ``tokensync stack
up``) under a temporary folder and stopped, by pid, at the end.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import sqlalchemy as sa

from shared.errors import StackError
from shared.settings import Region, Settings
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
from stack.pipeline import Pipeline
from stack.process import wait_until

__all__ = ["BenchEnv", "bench_env"]


class BenchEnv(Pipeline):
    """Servers, settings, store, relay and workers of one benchmark (the pipeline is
    ``stack.pipeline``'s; this adds the servers and the figures benchmarks read)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        super().__init__(
            settings,
            root,
            env_extra={"TOKENSYNC_LOG_LEVEL": "warning", "TOKENSYNC_STATE_DIR": str(root)},
        )
        self.root = root
        self.processes: list[ProcessRecord] = []  # servers, stopped last

    def add_region(self, name: str) -> Region:
        for attempt in range(3):  # a free port can be taken by someone else before we bind it
            server = RedisServer(f"redis-{name}", self.root / f"redis-{name}", free_port())
            record = server.start()
            self.processes.append(record)
            try:
                server.wait_ready(record)
                break
            except StackError:
                if attempt == 2:
                    raise
        region = Region(name, server.url)
        self.settings = self.settings.with_overrides(regions=(*self.settings.regions, region))
        return region

    def start_relay(self) -> None:
        """The relay in a thread of this process (the topic is created first)."""
        self.ensure_topics()
        self.start_relay_thread()

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        wait_until(predicate, timeout_s, what, interval_s=0.01)

    def wait_ready(self, region: str, timeout_s: float) -> None:
        """Wait until ``region`` is ready."""
        self.wait(lambda: self.state(region).ready, timeout_s, f"{region} ready")

    def wait_caught_up(
        self, region: str, ends: Mapping[int, int], timeout_s: float, what: str
    ) -> None:
        """Wait until ``region`` applied the topic up to ``ends``."""
        self.wait(lambda: self.caught_up(region, ends), timeout_s, what)

    def relay_lag_ms(self, *, revocations_only: bool = False) -> list[float]:
        """Commit -> acknowledged by Kafka (ms) of every published outbox row."""
        assert self.store is not None
        query = (
            "SELECT published_at_ms - recorded_at_ms FROM tokensync_outbox"
            " WHERE published_at_ms IS NOT NULL"
        )
        if revocations_only:
            query += " AND op <> 'issued'"
        with self.store.engine.connect() as conn:
            return [float(r[0]) for r in conn.execute(sa.text(query))]

    def close(self, grace_s: float = 20.0) -> None:
        super().close(grace_s)
        for record in reversed(self.processes):
            stop_pid(record.pid, record.argv[0] if record.argv else None)


@contextlib.contextmanager
def bench_env(
    regions: tuple[str, ...] = ("eu", "us", "ap"),
    *,
    postgres: bool = False,
    mariadb: bool = False,
    partitions: int = 6,
    kafka_heap: str = "1g",
    start_kafka: bool = True,
) -> Iterator[BenchEnv]:
    """Kafka, one Redis per region, optionally PostgreSQL or MariaDB; stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix="tokensync-bench-"))
    root.chmod(0o755)
    jars = KafkaJars(default_cache_dir())
    jars.ensure()
    broker = KafkaBroker(jars, root / "kafka", free_port(), free_port(), kafka_heap)
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=f"sqlite:///{root / 'store.db'}",
        partitions=partitions,
        signing_keys={"bench": secrets.token_bytes(32)},
        signing_key_id="bench",
        heartbeat_interval_s=0.5,
        log_level="warning",
    )
    env = BenchEnv(root, settings)
    try:
        if start_kafka:  # the WAN scenario starts its own broker with per-region listeners
            record = broker.start()
            env.processes.append(record)
            broker.wait_ready(record)
        for name in regions:
            env.add_region(name)
        if postgres:
            server = PostgresServer(root / "pg" / "data", free_port())
            pg = server.start()
            env.processes.append(pg)
            server.wait_ready(pg)
            env.settings = env.settings.with_overrides(database_url=server.url)
        if mariadb:
            maria = MariadbServer(root / "mariadb" / "data", free_port())
            record = maria.start()
            env.processes.append(record)
            maria.wait_ready(record)
            env.settings = env.settings.with_overrides(database_url=maria.url)
        yield env
    finally:
        env.close()
        shutil.rmtree(root, ignore_errors=True)
