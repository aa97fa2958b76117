"""A whole tokensync pipeline for one test: store, relay (a thread), region workers (processes).

Workers run as real ``tokensync worker`` processes so that tests can kill them.
Every name (topics, consumer groups) is unique to the test.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from producer.relay import RelayOptions
from producer.store import TokenStore
from shared.keys import RedisKeys, Topics
from shared.region_state import RegionState
from shared.seal_keys import SealKeyDir
from shared.settings import Region, Settings
from shared.validator import Policy, Validator
from stack.pipeline import Pipeline as PipelineBuilder
from tests.kafka_helpers import SIGNING_KEYS, wait_for


class Pipeline:
    """Store + relay + workers wired with one test's settings (by ``stack.pipeline``)."""

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
        settings = Settings(
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
        self.built = PipelineBuilder(
            settings, tmp_path, env_extra={"TOKENSYNC_STATE_DIR": str(tmp_path)}
        )
        self.store: TokenStore = self.built.open_store()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}  # by worker name
        self.worker_regions: dict[str, str] = {}  # worker name -> region
        self.relay_process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Settings:
        """The settings the children get (tests may replace them before starting one)."""
        return self.built.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.built.settings = settings

    @property
    def keys(self) -> RedisKeys:
        return self.built.keys

    def env(self) -> dict[str, str]:
        return self.built.env()

    def start_relay(self) -> None:
        options = RelayOptions(
            heartbeat_interval_s=self.settings.heartbeat_interval_s, backoff_max_s=0.5
        )
        self.built.start_relay_thread(options, publisher_timeout_s=10)

    def start_relay_process(self) -> None:
        """The relay as a ``tokensync relay`` process (tests may SIGKILL it)."""
        self.built.start_relay_process()
        self.relay_process = self.built.popen("relay")

    def kill_relay_process(self) -> None:
        if self.relay_process is not None:
            self.built.kill("relay")
            self.relay_process = None

    def start_worker(
        self, region: str, redis_url: str | None = None, *extra: str, name: str | None = None
    ) -> None:
        """A ``tokensync worker`` process; ``name`` (default: the region) tells several
        workers of one region apart, in this harness and in their log files."""
        name = name or region
        self.built.start_worker(region, *extra, name=f"worker-{name}", redis_url=redis_url)
        self.workers[name] = self.built.popen(f"worker-{name}")
        self.worker_regions[name] = region

    def kill_worker(self, name: str) -> None:
        self.workers.pop(name)
        self.worker_regions.pop(name)
        self.built.kill(f"worker-{name}")

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        self.worker_regions.pop(name)
        self.built.stop(f"worker-{name}", grace_s=30)
        proc.wait(timeout=10)

    def redis(self, region: str) -> redis.Redis:
        return self.built.redis(region)

    def state(self, region: str) -> RegionState:
        return self.built.state(region)

    def wait_ready(self, region: str, timeout_s: float = 90) -> None:
        try:
            wait_for(lambda: self.state(region).ready, timeout_s, f"region {region} ready")
        except AssertionError as e:
            names = [n for n, r in self.worker_regions.items() if r == region] or [region]
            tail = "\n".join(line for n in names for line in self.worker_log(n).splitlines()[-25:])
            raise AssertionError(f"{e}; state {self.state(region)}; worker log:\n{tail}") from None

    def start_all(self) -> None:
        """The relay thread and one worker per region, then wait until every region is
        ready (workers start together, so their bootstraps overlap)."""
        self.start_relay()
        names = [r.name for r in self.settings.regions]
        for name in names:
            self.start_worker(name)
        for name in names:
            self.wait_ready(name)

    def wait_applied(self, seq: int, timeout_s: float = 60) -> None:
        """Until every region with a worker applied outbox row ``seq`` and everything before
        it in every partition (the topic's end offsets once ``seq`` was published)."""
        wait_for(
            lambda: self.store.position(seq).offset is not None, timeout_s, f"seq {seq} published"
        )
        ends = self.built.end_offsets()

        def caught_up() -> bool:
            return all(self.built.caught_up(r, ends) for r in set(self.worker_regions.values()))

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
        self.built.close()


def pipeline_context(pipeline: Pipeline) -> Iterator[Pipeline]:
    try:
        yield pipeline
    finally:
        pipeline.close()


def sealed_pipeline(
    tmp: Path,
    kafka_bootstrap: str,
    redis_server: tuple[str, int],
    *,
    first_db: int,
    seal_wait_s: float,
    regions: tuple[str, ...] = ("eu", "us"),
    prepare_keys: Callable[[SealKeyDir], None] = lambda keys: None,
) -> Iterator[Pipeline]:
    """A pipeline in ``sealed`` signing mode (``yield from`` it in a fixture): a seal key
    generated (then ``prepare_keys`` may add or retire some), the relay thread and one
    worker per region running and ready, each region in a flushed Redis database of the
    shared server (``first_db`` and the following ones), topics unique to the caller."""
    host, port = redis_server
    urls = {name: f"redis://{host}:{port}/{first_db + i}" for i, name in enumerate(regions)}
    for url in urls.values():
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}")
    pipeline = Pipeline(tmp, kafka_bootstrap, f"sqlite:///{tmp / 'store.db'}", topics, urls)
    keys = SealKeyDir(tmp / "seal-keys")
    keys.generate()
    prepare_keys(keys)
    pipeline.settings = pipeline.settings.with_overrides(
        signing_mode="sealed", seal_keys_dir=tmp / "seal-keys", seal_wait_s=seal_wait_s
    )
    try:
        pipeline.start_all()
        yield pipeline
    finally:
        pipeline.close()
