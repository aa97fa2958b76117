"""One pipeline builder: store, relay and region workers wired from one ``Settings``.

The local stack's launcher, the benchmarks (``bench/env.py``) and the tests
(``tests/harness.py``) all wire a pipeline through this class, so that the child
processes' environment, their command lines and log files, the store's migration, the
relay thread and "has every region caught up" are written once. It does not import the
launcher, and imports ``producer`` only inside the methods that need it (the launcher
starts the relay and the workers as ``tokensync`` commands and never opens the store).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from shared.events import Keyring
from shared.keys import RedisKeys, Topics
from shared.region_state import RegionState, read_region_state
from shared.settings import PREFIX, Settings
from stack.process import ProcessRecord, child_process, start_process, stop_pid

if TYPE_CHECKING:
    from producer.relay import RelayOptions
    from producer.store import TokenStore

__all__ = ["Pipeline", "child_environment", "tokensync_argv"]


def tokensync_argv(args: Sequence[str]) -> list[str]:
    """The command line of ``tokensync ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "shared", *args]


def child_environment(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this process's environment without any
    ``TOKENSYNC_*`` variable, then ``settings`` (already environment > file > defaults),
    then ``extra``. A child thus runs with exactly the settings its parent resolved."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    return {**base, **settings.to_env(), **(extra or {})}


class Pipeline:
    """Store + relay + region workers of one deployment (a stack, a benchmark, a test).

    Children are ``tokensync`` commands started in ``cwd`` with their output appended to
    ``<log_dir>/<name>.log``; ``close`` stops the relay thread, every child this pipeline
    started (workers first) and the store.
    """

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        cwd: Path | None = None,
        env_extra: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.cwd = cwd
        self.env_extra = dict(env_extra or {})
        self.store: TokenStore | None = None
        self.children: dict[str, ProcessRecord] = {}
        self._relay_stop = threading.Event()
        self._relay_thread: threading.Thread | None = None
        self._relay_close: Callable[[], None] | None = None

    # --- names --------------------------------------------------------------------------
    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_namespace)

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    @property
    def keyring(self) -> Keyring:
        return Keyring(self.settings.signing_keys, self.settings.signing_key_id)

    # --- child processes ----------------------------------------------------------------
    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment this pipeline's children get."""
        return child_environment(self.settings, {**self.env_extra, **(extra or {})})

    def log_path(self, name: str) -> Path:
        """Where the child called ``name`` writes."""
        return self.log_dir / f"{name}.log"

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> ProcessRecord:
        """Start ``tokensync ARGS`` as the child ``name`` (``env``: its whole environment,
        default ``self.env()``)."""
        record = start_process(
            name,
            tokensync_argv(args),
            self.log_path(name),
            env=self.env() if env is None else env,
            cwd=self.cwd,
            port=port,
        )
        self.children[name] = record
        return record

    def start_worker(
        self,
        region: str,
        *extra_args: str,
        name: str | None = None,
        redis_url: str | None = None,
        kafka_bootstrap: str | None = None,
    ) -> ProcessRecord:
        """A ``tokensync worker`` for ``region`` (``name``, default ``worker-REGION``, tells
        several workers of one region apart); ``kafka_bootstrap`` overrides the broker
        address for this worker alone (a delayed link)."""
        args = ["worker", "--region", region, *extra_args]
        if redis_url:
            args += ["--redis", redis_url]
        extra = {PREFIX + "KAFKA_BOOTSTRAP": kafka_bootstrap} if kafka_bootstrap else None
        return self.start(name or f"worker-{region}", args, env=self.env(extra))

    def start_relay_process(self, name: str = "relay") -> ProcessRecord:
        """The relay as a ``tokensync relay`` child."""
        return self.start(name, ["relay"])

    def popen(self, name: str) -> subprocess.Popen[bytes]:
        """The ``Popen`` handle of a running child (to wait for it or signal it)."""
        child = child_process(self.children[name].pid)
        if child is None:
            raise KeyError(f"{name} is not a running child of this process")
        return child

    def kill(self, name: str) -> None:
        """SIGKILL the child ``name`` and reap it."""
        record = self.children.pop(name)
        child = child_process(record.pid)
        if child is not None:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)

    def stop(self, name: str, grace_s: float = 20.0) -> None:
        """SIGTERM the child ``name`` (SIGKILL after ``grace_s``)."""
        record = self.children.pop(name)
        stop_pid(record.pid, sys.executable, grace_s=grace_s)

    def forget(self, name: str) -> None:
        """Drop a child that exited by itself from the list ``close`` stops."""
        self.children.pop(name, None)

    # --- store and relay ----------------------------------------------------------------
    def open_store(self, database_url: str | None = None) -> TokenStore:
        """Migrate the store (``database_url``, default the settings') and open it."""
        from producer.schema import create_engine, migrate
        from producer.store import TokenStore

        engine = create_engine(database_url or self.settings.database_url)
        migrate(engine)
        self.store = TokenStore(engine)
        return self.store

    def ensure_topics(self) -> None:
        """Create the token topic (compacted, ``settings.partitions``) unless it exists."""
        from producer.kafka_io import KafkaAdmin

        admin = KafkaAdmin(self.settings.kafka_bootstrap, client=self.settings.kafka_client)
        try:
            admin.ensure_topics(
                self.topics,
                self.settings.partitions,
                replication_factor=self.settings.kafka_replication_factor,
                min_insync_replicas=self.settings.kafka_min_insync_replicas,
            )
        finally:
            admin.close()

    def start_relay_thread(
        self, options: RelayOptions | None = None, *, publisher_timeout_s: float = 30.0
    ) -> None:
        """The relay loop in a background thread of this process, until ``close``; each
        (re)connection makes sure the topic exists first."""
        from producer.kafka_io import KafkaPublisher
        from producer.publisher import EventPublisher
        from producer.relay import Relay, RelayOptions
        from producer.seal_mode import record_keyring, sealing
        from producer.wakeup import waker_for

        store = self.store or self.open_store()

        def connect() -> EventPublisher:
            self.ensure_topics()
            return KafkaPublisher(
                self.settings.kafka_bootstrap,
                self.topics.tokens,
                timeout_s=publisher_timeout_s,
                client=self.settings.kafka_client,
            )

        waker = waker_for(store.engine)
        relay = Relay(
            store.engine,
            sealing(self.settings, self.topics.tokens, connect),
            record_keyring(self.settings, self.keyring),
            waker,
            options=options
            or RelayOptions(heartbeat_interval_s=self.settings.heartbeat_interval_s),
        )
        self._relay_close = waker.close
        self._relay_thread = threading.Thread(
            target=relay.run, args=(self._relay_stop,), daemon=True
        )
        self._relay_thread.start()

    # --- regions ------------------------------------------------------------------------
    def redis(self, region: str) -> redis.Redis:
        """A client of ``region``'s Redis (the caller closes it)."""
        return redis.Redis.from_url(self.settings.region(region).redis_url)

    def state(self, region: str) -> RegionState:
        """What ``region``'s Redis says about its cache."""
        client = self.redis(region)
        try:
            return read_region_state(client, self.keys, region)
        finally:
            client.close()

    def end_offsets(self) -> dict[int, int]:
        """The token topic's end offset per partition."""
        from producer.kafka_io import KafkaAdmin

        admin = KafkaAdmin(self.settings.kafka_bootstrap, client=self.settings.kafka_client)
        try:
            return admin.end_offsets(self.topics.tokens)
        finally:
            admin.close()

    def caught_up(self, region: str, ends: Mapping[int, int]) -> bool:
        """Whether ``region`` applied every record before ``ends`` in every partition."""
        state = self.state(region)
        return all(state.has_applied(p, end - 1) for p, end in ends.items() if end)

    # --- the end ------------------------------------------------------------------------
    def stop_relay_thread(self) -> None:
        """Stop the relay thread (if one runs) and wait for it."""
        self._relay_stop.set()
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=30)
            self._relay_thread = None
        if self._relay_close is not None:
            self._relay_close()
            self._relay_close = None

    def close(self, grace_s: float = 20.0) -> None:
        """Stop the relay thread, the children (workers before the relay), the store."""
        self.stop_relay_thread()
        for name in sorted(self.children, key=lambda n: n.startswith("relay")):
            self.stop(name, grace_s)
        if self.store is not None:
            self.store.close()
            self.store = None
