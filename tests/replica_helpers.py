"""A region's Redis with read replicas for one test: a primary and replicas of its own
(local ``redis-server`` processes), replication paused, a primary killed, a replica
promoted."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from producer.records import IssuedToken
from shared.validator import Outcome, Validator
from stack.process import ProcessRecord, free_port, stop_pid
from stack.redis import RedisServer
from tests.kafka_helpers import wait_for


@dataclass
class ReplicatedRedis:
    """A primary and its replicas; ``spec`` is the region URL naming them all."""

    primary: RedisServer
    replicas: list[RedisServer]
    records: dict[str, ProcessRecord] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return f"{self.primary.url};replicas={','.join(r.url for r in self.replicas)}"

    def client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis.from_url(server.url, socket_timeout=5.0)

    def wait_in_sync(self, timeout_s: float = 20) -> None:
        """Until every replica holds everything the primary wrote so far."""
        primary = self.client(self.primary)
        target = int(primary.info("replication")["master_repl_offset"])

        def synced() -> bool:
            for replica in self.replicas:
                info = self.client(replica).info("replication")
                if info.get("master_link_status") != "up":
                    return False
                if int(info.get("slave_repl_offset", -1)) < target:
                    return False
            return True

        wait_for(synced, timeout_s, "replicas in sync with the primary")

    def pause(self, replica: RedisServer) -> None:
        """Stop replication to ``replica`` (it follows a port nobody listens on): it keeps
        what it has, and serves it."""
        self.client(replica).replicaof("127.0.0.1", str(free_port()))

    def promote(self, replica: RedisServer) -> None:
        """REPLICAOF NO ONE: ``replica`` is a primary now, with what it had."""
        self.client(replica).replicaof("NO", "ONE")

    def kill(self, server: RedisServer) -> None:
        record = self.records.pop(server.name)
        os.kill(record.pid, signal.SIGKILL)
        stop_pid(record.pid, grace_s=5)


@contextmanager
def replicated_redis(tmp_path: Path, replicas: int = 1) -> Iterator[ReplicatedRedis]:
    """A primary and ``replicas`` replicas, in sync, stopped at the end."""
    primary = RedisServer("redis-primary", tmp_path / "redis-primary", free_port())
    servers = ReplicatedRedis(
        primary,
        [
            RedisServer(
                f"redis-replica{n}", tmp_path / f"redis-replica{n}", free_port(), 16, primary.port
            )
            for n in range(1, replicas + 1)
        ],
    )
    try:
        for server in [primary, *servers.replicas]:
            record = server.start()
            servers.records[server.name] = record
            server.wait_ready(record)
        servers.wait_in_sync()
        yield servers
    finally:
        for record in servers.records.values():
            stop_pid(record.pid, grace_s=5)


def accepted(validator: Validator, tokens: list[IssuedToken]) -> list[int]:
    """The ids of ``tokens`` that ``validator`` answers valid."""
    return [t.id for t in tokens if validator.validate(t.plain_text_token).outcome is Outcome.VALID]
