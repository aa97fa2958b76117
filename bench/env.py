"""A throwaway tokensync deployment for one benchmark run: real Kafka, Redis, PostgreSQL.

Servers are started from the local binaries (the same code as ``tokensync stack
up``) under a temporary folder and stopped, by pid, at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa

from producer.kafka_io import KafkaAdmin, KafkaPublisher
from producer.publisher import EventPublisher
from producer.relay import Relay, RelayOptions
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from producer.wakeup import waker_for
from shared.errors import StackError
from shared.events import Keyring
from shared.keys import RedisKeys, Topics
from shared.region_state import RegionState, read_region_state
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
from stack.process import wait_until

__all__ = ["BenchEnv", "bench_env"]


@dataclass
class BenchEnv:
    """Servers, settings, store, relay and workers of one benchmark."""

    root: Path
    settings: Settings
    store: TokenStore | None = None
    processes: list[ProcessRecord] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _relay_stop: threading.Event = field(default_factory=threading.Event)
    _relay_thread: threading.Thread | None = None

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_namespace)

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    @property
    def keyring(self) -> Keyring:
        return Keyring(self.settings.signing_keys, self.settings.signing_key_id)

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

    def open_store(self, database_url: str) -> TokenStore:
        engine = create_engine(database_url)
        migrate(engine)
        self.store = TokenStore(engine)
        return self.store

    def ensure_topics(self) -> None:
        admin = KafkaAdmin(self.settings.kafka_bootstrap)
        try:
            admin.ensure_topics(self.topics, self.settings.partitions)
        finally:
            admin.close()

    def start_relay(self) -> None:
        assert self.store is not None
        self.ensure_topics()

        def connect() -> EventPublisher:
            return KafkaPublisher(self.settings.kafka_bootstrap, self.topics.tokens)

        relay = Relay(
            self.store.engine,
            connect,
            self.keyring,
            waker_for(self.store.engine),
            options=RelayOptions(heartbeat_interval_s=self.settings.heartbeat_interval_s),
        )
        self._relay_thread = threading.Thread(
            target=relay.run, args=(self._relay_stop,), daemon=True
        )
        self._relay_thread.start()

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
        return {
            **base,
            **self.settings.to_env(),
            "TOKENSYNC_LOG_LEVEL": "warning",
            "TOKENSYNC_STATE_DIR": str(self.root),
        }

    def start_worker(self, region: str, kafka_bootstrap: str | None = None) -> None:
        log = (self.root / f"worker-{region}.log").open("ab")
        env = self.env()
        if kafka_bootstrap:
            env["TOKENSYNC_KAFKA_BOOTSTRAP"] = kafka_bootstrap
        self.workers[region] = subprocess.Popen(
            [sys.executable, "-m", "shared", "worker", "--region", region],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def state(self, region: str) -> RegionState:
        client = redis.Redis.from_url(self.settings.region(region).redis_url)
        try:
            return read_region_state(client, self.keys, region)
        finally:
            client.close()

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        wait_until(predicate, timeout_s, what, interval_s=0.01)

    def end_offsets(self) -> dict[int, int]:
        admin = KafkaAdmin(self.settings.kafka_bootstrap)
        try:
            return admin.end_offsets(self.topics.tokens)
        finally:
            admin.close()

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

    def caught_up(self, region: str, ends: dict[int, int]) -> bool:
        state = self.state(region)
        return all(state.has_applied(p, end - 1) for p, end in ends.items() if end)

    def close(self) -> None:
        self._relay_stop.set()
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=30)
        for proc in self.workers.values():
            stop_pid(proc.pid, sys.executable, grace_s=20)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self.store is not None:
            self.store.close()
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
