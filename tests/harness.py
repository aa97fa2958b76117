"""A whole tokensync pipeline for one test: store, relay (a thread), region workers (processes).

Workers run as real ``tokensync worker`` processes so that tests can kill them.
Every name (topics, consumer groups) is unique to the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import redis

from producer.kafka_io import KafkaAdmin
from producer.relay import RelayOptions
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.keys import RedisKeys, Topics
from shared.region_state import RegionState, read_region_state
from shared.settings import Region, Settings
from shared.validator import Policy, Validator
from stack.process import stop_pid
from tests.kafka_helpers import SIGNING_KEYS, kafka_connector, running_relay, wait_for


class Pipeline:
    """Store + relay + workers wired with one test's settings."""

    def __init__(
        self,
        tmp_path: Path,
        kafka: str,
        database_url: str,
        topics: Topics,
        regions: dict[str, str],
        partitions: int = 3,
    ) -> None:
        self.tmp_path = tmp_path
        self.settings = Settings(
            kafka_bootstrap=kafka,
            database_url=database_url,
            regions=tuple(Region(n, u) for n, u in regions.items()),
            topic_prefix=topics.prefix,
            partitions=partitions,
            signing_keys=SIGNING_KEYS,
            signing_key_id="test-1",
            heartbeat_interval_s=0.2,
            log_format="json",
            log_level="info",
        )
        self.topics = topics
        engine = create_engine(database_url)
        migrate(engine)
        self.store = TokenStore(engine)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}  # by worker name
        self.worker_regions: dict[str, str] = {}  # worker name -> region
        self.relay_process: subprocess.Popen[bytes] | None = None
        self._stack = ExitStack()

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_namespace)

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
        return {**base, **self.settings.to_env(), "TOKENSYNC_STATE_DIR": str(self.tmp_path)}

    def start_relay(self) -> None:
        connect = kafka_connector(
            self.settings.kafka_bootstrap, self.topics, self.settings.partitions
        )
        options = RelayOptions(
            heartbeat_interval_s=self.settings.heartbeat_interval_s, backoff_max_s=0.5
        )
        self._stack.enter_context(running_relay(self.store.engine, connect, options=options))

    def start_relay_process(self) -> None:
        """The relay as a ``tokensync relay`` process (tests may SIGKILL it)."""
        log = (self.tmp_path / "relay.log").open("ab")
        self.relay_process = subprocess.Popen(
            [sys.executable, "-m", "shared", "relay"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill_relay_process(self) -> None:
        if self.relay_process is not None:
            self.relay_process.send_signal(signal.SIGKILL)
            self.relay_process.wait(timeout=10)
            self.relay_process = None

    def start_worker(
        self, region: str, redis_url: str | None = None, *extra: str, name: str | None = None
    ) -> None:
        """A ``tokensync worker`` process; ``name`` (default: the region) tells several
        workers of one region apart, in this harness and in their log files."""
        name = name or region
        log = (self.tmp_path / f"worker-{name}.log").open("ab")
        args = [sys.executable, "-m", "shared", "worker", "--region", region, *extra]
        if redis_url:
            args += ["--redis", redis_url]
        self.workers[name] = subprocess.Popen(
            args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.worker_regions[name] = region
        log.close()

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        self.worker_regions.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        self.worker_regions.pop(name)
        stop_pid(proc.pid, sys.executable, grace_s=30)
        proc.wait(timeout=10)

    def redis(self, region: str) -> redis.Redis:
        return redis.Redis.from_url(self.settings.region(region).redis_url)

    def state(self, region: str) -> RegionState:
        client = self.redis(region)
        try:
            return read_region_state(client, self.keys, region)
        finally:
            client.close()

    def wait_ready(self, region: str, timeout_s: float = 90) -> None:
        try:
            wait_for(lambda: self.state(region).ready, timeout_s, f"region {region} ready")
        except AssertionError as e:
            names = [n for n, r in self.worker_regions.items() if r == region] or [region]
            tail = "\n".join(line for n in names for line in self.worker_log(n).splitlines()[-25:])
            raise AssertionError(f"{e}; state {self.state(region)}; worker log:\n{tail}") from None

    def wait_applied(self, seq: int, timeout_s: float = 60) -> None:
        """Until every region with a worker applied outbox row ``seq`` and everything before
        it in every partition (the topic's end offsets once ``seq`` was published)."""
        wait_for(
            lambda: self.store.position(seq).offset is not None, timeout_s, f"seq {seq} published"
        )
        admin = KafkaAdmin(self.settings.kafka_bootstrap)
        try:
            ends = admin.end_offsets(self.topics.tokens)
        finally:
            admin.close()

        def caught_up() -> bool:
            for region in set(self.worker_regions.values()):
                state = self.state(region)
                if not all(state.has_applied(p, end - 1) for p, end in ends.items() if end):
                    return False
            return True

        wait_for(caught_up, timeout_s, f"every region caught up with seq {seq}")

    def validator(self, region: str, **policy: object) -> Validator:
        return Validator.from_url(
            self.settings.region(region).redis_url,
            keys=self.keys,
            policy=Policy(**policy) if policy else Policy(),  # type: ignore[arg-type]
        )

    def worker_log(self, name: str) -> str:
        path = self.tmp_path / f"worker-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        if self.relay_process is not None:
            stop_pid(self.relay_process.pid, sys.executable, grace_s=20)
            self.relay_process.wait(timeout=10)
        self._stack.close()
        self.store.close()


def pipeline_context(pipeline: Pipeline) -> Iterator[Pipeline]:
    try:
        yield pipeline
    finally:
        pipeline.close()
