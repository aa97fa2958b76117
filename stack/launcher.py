"""The local stack: a Kafka broker, one Redis per region, and the tokensync processes.

``up`` starts what is not already running and records every process (pid,
port, argv, log) in ``<state_dir>/stack.json``; ``down`` stops exactly those
pids; ``status`` probes them. The endpoints go into the settings file that
later ``tokensync`` commands in the same directory read. The relay, the API,
the region workers and the regions' gates are started as ``tokensync`` commands (never imported),
and only when an installed package provides them, through ``stack.pipeline``.

Settings follow the one rule (environment, then the settings file, then defaults): every
``TOKENSYNC_*`` value of ``up``'s environment is honoured and recorded in the settings file.
The endpoints the stack runs itself (Kafka, the regions' Redis, the API, the gates) take
their ports from the environment when those are free; a host other than this machine there
is an error, since the stack cannot run a server elsewhere.

Over 350 lines: one class for one concept, the processes this directory's stack runs and
the order ``up`` starts, records and stops them in; what it builds on is split out already:
the settings file (``stackfile``), the children's wiring (``pipeline``), processes and ports
(``process``), and the servers (``kafka``, ``redis``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import StackError
from shared.settings import (
    PREFIX,
    Region,
    Settings,
    read_settings_file,
    settings_file_path,
    state_dir_path,
)
from stack.kafka import KafkaBroker, KafkaCluster, KafkaJars, default_cache_dir
from stack.pipeline import Pipeline
from stack.process import (
    ProcessRecord,
    free_port,
    log_hint,
    pid_alive,
    port_open,
    stop_pid,
    wait_until,
)
from stack.redis import RedisServer
from stack.relay_role import RelayRole, relay_role
from stack.stackfile import (
    check_local,
    describe,
    environment_settings,
    overridden_note,
    record_gates,
    record_settings,
    running_conflict,
    set_regions,
)

__all__ = ["ComponentStatus", "LocalStack", "StackOptions", "app_commands"]

DEFAULT_REGIONS = ("eu", "us", "ap")
# Order in which ``down`` stops processes: consumers of a server before the server.
_APPS = {"relay", "api", "worker", "gate"}  # the processes that run with the stack's settings
_STOP_ORDER = {"api": 0, "gate": 0, "relay": 1, "worker": 2, "link": 3, "redis": 4, "kafka": 5}


def app_commands() -> set[str]:
    """Names of ``tokensync`` commands the installed packages contribute."""
    return {ep.name for ep in entry_points(group="tokensync.commands")}


def _kind(name: str) -> str:
    return name.split("-", 1)[0]


@dataclass(frozen=True)
class StackOptions:
    """What ``tokensync stack up`` was asked for."""

    regions: tuple[str, ...] = DEFAULT_REGIONS
    kafka_port: int | None = None
    redis_ports: Mapping[str, int] | None = None
    kafka_heap: str = "512m"
    with_apps: bool = True
    link_delays: Mapping[str, float] = field(default_factory=dict)
    brokers: int = 1  # 3: a three-node KRaft cluster (one quorum), 256 MiB heaps
    replicas: int = 0  # read replicas of each region's Redis (validators read one)
    relays: int = 1  # more: standbys that take the relay lease over (``relay-2``, ...)


@dataclass(frozen=True)
class ComponentStatus:
    """One stack process as ``status`` reports it."""

    name: str
    pid: int
    port: int | None
    up: bool
    log: str
    role: RelayRole | None = None  # a relay's: active (holds the lease) or standby

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (a relay's also has ``role`` and ``epoch``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "pid": self.pid,
            "port": self.port,
            "up": self.up,
            "log": self.log,
        }
        if _kind(self.name) == "relay":
            out["role"] = self.role.role if self.role else None
            out["epoch"] = self.role.epoch if self.role else None
        return out


class LocalStack:
    """The local stack rooted at ``<cwd>/<state_dir>``."""

    def __init__(
        self,
        cwd: Path,
        environ: Mapping[str, str],
        cache_dir: Path | None = None,
        echo: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.cwd = cwd.resolve()
        self.environ = dict(environ)
        self.state_dir = state_dir_path(self.cwd, environ)
        self.cache_dir = cache_dir or default_cache_dir()
        self.echo = echo

    # --- state file -----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        """The JSON record of the processes this stack started."""
        return self.state_dir / "stack.json"

    @property
    def settings_file(self) -> Path:
        """The settings file later commands read."""
        return settings_file_path(self.cwd, self.environ)

    def records(self) -> list[ProcessRecord]:
        """Processes recorded by earlier ``up`` calls (alive or not)."""
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise StackError(f"cannot read {self.state_file}: {e}") from e
        return [ProcessRecord.from_json(item) for item in data.get("processes", [])]

    def _save(self, records: Sequence[ProcessRecord]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ordered = sorted(records, key=lambda r: (-_STOP_ORDER.get(_kind(r.name), 9), r.name))
        body = {"processes": [r.to_json() for r in ordered]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.state_file)

    # --- up -------------------------------------------------------------------------------
    def up(self, options: StackOptions) -> list[ComponentStatus]:
        """Start every missing component; running ones are kept, never started twice."""
        running = {r.name: r for r in self.records() if r.alive}
        chosen = environment_settings(self.environ)
        check_local(chosen)
        recorded = read_settings_file(self.settings_file)
        if any(_kind(name) in _APPS for name in running):
            running_conflict(chosen, recorded, self.settings_file)
        previous = {**recorded, **chosen}
        old_settings = Settings.from_env(previous) if previous else Settings()

        started: list[tuple[ProcessRecord, Callable[[], None]]] = []
        kafka_port, links = self._start_brokers(options, running, old_settings, started)
        regions = self._start_redis(options, running, old_settings, started)
        records = {**running, **{r.name: r for r, _ in started}}
        self._save(list(records.values()))
        servers = ", ".join(r.name for r, _ in started)
        if started:  # progress: Kafka takes seconds to answer, a screen must not look stuck
            self.echo(f"starting {servers}")
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
            for future in [pool.submit(wait) for _, wait in started]:
                future.result()
        if started:
            self.echo(f"{servers} ready after {time.monotonic() - began:.1f} s")
        records.update(self._start_links(links, options.link_delays))
        self._save(list(records.values()))

        api_port = _pick_port(None, _port_of(old_settings.api_url))
        if "api" in running:
            api_port = running["api"].port or api_port
        if links or not running:
            old_settings = old_settings.with_overrides(
                link_delays=",".join(
                    f"{r}={options.link_delays[r] * 1000:g}ms" for r, _, _ in links
                )
            )
        gates = self._gate_urls(regions, running, old_settings) if options.with_apps else {}
        settings = record_settings(
            self.settings_file,
            previous,
            old_settings,
            state_dir=self.state_dir,
            kafka_port=kafka_port,
            regions=regions,
            api_port=api_port,
            kafka_bootstrap=_bootstrap_of(records.values()),
        )
        self.echo(f"settings written to {self.settings_file}")
        if gates:
            settings = record_gates(self.settings_file, settings, gates)
        if note := overridden_note(chosen, settings):
            self.echo(note)
        if options.with_apps:
            apps = self._start_apps(settings, running, options.relays)
            if apps:
                self.echo(f"starting {', '.join(apps)}")
            records.update(apps)
            self._save(list(records.values()))
        _wait_for_ports(records.values())
        return self.status()

    def _start_brokers(
        self,
        options: StackOptions,
        running: Mapping[str, ProcessRecord],
        old: Settings,
        started: list[tuple[ProcessRecord, Callable[[], None]]],
    ) -> tuple[int, list[tuple[str, int, int]]]:
        """Start Kafka (one broker or a cluster) unless it runs: its port, and the delayed
        links to set up (region, broker listener port, proxy port)."""
        jars = KafkaJars(self.cache_dir)
        if "kafka" not in running and not jars.present:
            self.echo(f"fetching Kafka {jars.version} jars into {jars.libs.parent} (once)")
        kafka_port = _pick_port(options.kafka_port, _port_of_bootstrap(old))
        if "kafka" in running:
            self._check_links(running, options)
            return running["kafka"].port or kafka_port, []
        jars.ensure()
        links = [(r, free_port(), free_port()) for r in options.link_delays]
        if options.brokers > 1:
            started += self._start_cluster(jars, kafka_port, options)
        else:
            started.append(self._start_kafka(jars, kafka_port, options.kafka_heap, links))
        return kafka_port, links

    def _start_redis(
        self,
        options: StackOptions,
        running: Mapping[str, ProcessRecord],
        old: Settings,
        started: list[tuple[ProcessRecord, Callable[[], None]]],
    ) -> list[Region]:
        """Start each region's Redis that is not running (appended to ``started``)."""
        old_ports = {r.name: _port_of(r.redis_url) for r in old.regions}
        old_replicas = {r.name: [_port_of(u) for u in r.replicas] for r in old.regions}
        regions: list[Region] = []
        for name in options.regions:
            port = self._start_one_redis(
                f"redis-{name}",
                (options.redis_ports or {}).get(name),
                old_ports.get(name),
                running,
                started,
            )
            before = old_replicas.get(name, [])
            replicas = [
                self._start_one_redis(
                    f"redis-{name}-replica{n}",
                    None,
                    before[n - 1] if n <= len(before) else None,
                    running,
                    started,
                    replica_of=port,
                )
                for n in range(1, options.replicas + 1)
            ]
            urls = [f"redis://127.0.0.1:{p}/0" for p in [port, *replicas]]
            regions.append(Region(name, urls[0], tuple(urls[1:])))
        return regions

    def _start_one_redis(
        self,
        proc_name: str,
        wanted: int | None,
        previous: int | None,
        running: Mapping[str, ProcessRecord],
        started: list[tuple[ProcessRecord, Callable[[], None]]],
        *,
        replica_of: int | None = None,
    ) -> int:
        """The port of a region's Redis (a replica of the one on ``replica_of``), started
        unless it runs."""
        if proc_name in running:
            return running[proc_name].port or 0
        port = _pick_port(wanted, previous)
        server = RedisServer(proc_name, self.state_dir / proc_name, port, replica_of=replica_of)
        record = server.start()
        started.append((record, functools.partial(server.wait_ready, record)))
        return port

    def _pipeline(self, settings: Settings) -> Pipeline:
        """The builder of this stack's children: logs under ``<state_dir>/logs``, JSON."""
        extra = {"TOKENSYNC_LOG_FORMAT": "json"}
        if PREFIX + "SETTINGS_FILE" in self.environ:
            extra[PREFIX + "SETTINGS_FILE"] = str(self.settings_file)
        return Pipeline(settings, self.state_dir / "logs", cwd=self.cwd, env_extra=extra)

    def _start_kafka(
        self, jars: KafkaJars, port: int, heap: str, links: Sequence[tuple[str, int, int]]
    ) -> tuple[ProcessRecord, Callable[[], None]]:
        listeners = tuple((_listener(r), bind, proxy) for r, bind, proxy in links)
        broker = KafkaBroker(jars, self.state_dir / "kafka", port, free_port(), heap, listeners)
        record = broker.start()
        return record, functools.partial(broker.wait_ready, record)

    def _start_cluster(
        self, jars: KafkaJars, port: int, options: StackOptions
    ) -> list[tuple[ProcessRecord, Callable[[], None]]]:
        if options.link_delays:
            raise StackError("link delays need the single-broker stack (without --brokers)")
        ports = [(port, free_port())] + [
            (free_port(), free_port()) for _ in range(1, options.brokers)
        ]
        cluster = KafkaCluster.build(
            jars, self.state_dir / "kafka-cluster", ports, heap=options.kafka_heap
        )
        started: list[tuple[ProcessRecord, Callable[[], None]]] = []
        for broker, record in zip(cluster.brokers, cluster.start(), strict=True):
            started.append((record, functools.partial(broker.wait_ready, record, 120.0)))
        return started

    @staticmethod
    def _check_links(running: Mapping[str, ProcessRecord], options: StackOptions) -> None:
        had = {r.name.removeprefix("link-") for r in running.values() if _kind(r.name) == "link"}
        if options.link_delays and set(options.link_delays) != had:
            raise StackError(
                "link delays are set when Kafka starts: run `tokensync stack down` first"
            )

    def _start_links(
        self, links: Sequence[tuple[str, int, int]], delays: Mapping[str, float]
    ) -> dict[str, ProcessRecord]:
        """One delaying proxy per delayed region, in front of its own broker listener."""
        started = {}
        for region, bind, proxy in links:
            name = f"link-{region}"
            args = [
                "stack",
                "proxy",
                "--listen",
                str(proxy),
                "--target",
                f"127.0.0.1:{bind}",
                "--delay",
                f"{delays[region] * 1000:g}ms",
            ]
            env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
            started[name] = self._pipeline(Settings()).start(name, args, env=env, port=proxy)
        return started

    @staticmethod
    def _gate_urls(
        regions: Sequence[Region], running: Mapping[str, ProcessRecord], old: Settings
    ) -> dict[str, str]:
        """Where each region's gate listens (kept across restarts while the port is free)."""
        if "gate" not in app_commands():
            return {}
        urls = {}
        for r in regions:
            record = running.get(f"gate-{r.name}")
            port = record.port if record and record.port else None
            port = port or _pick_port(None, _port_of(old.gate_urls.get(r.name, "")))
            urls[r.name] = f"http://127.0.0.1:{port}"
        return urls

    def _start_apps(
        self, settings: Settings, running: Mapping[str, ProcessRecord], relays: int = 1
    ) -> dict[str, ProcessRecord]:
        available = app_commands()
        wanted: list[tuple[str, list[str]]] = []
        if "relay" in available:  # the first is "relay", standbys "relay-2", ...
            names = ["relay", *(f"relay-{n}" for n in range(2, relays + 1))]
            wanted += [(name, ["relay"]) for name in names]
        if "api" in available:
            wanted.append(("api", ["api", "--port", str(_port_of(settings.api_url))]))
        if "worker" in available:
            wanted.extend(
                (f"worker-{r.name}", ["worker", "--region", r.name]) for r in settings.regions
            )
        if "gate" in available:
            wanted.extend(
                (f"gate-{r}", ["gate", "--region", r, "--port", str(_port_of(url))])
                for r, url in settings.gate_urls.items()
            )
        pipeline = self._pipeline(settings)
        proxies = {
            r.name.removeprefix("link-"): r.port for r in self.records() if _kind(r.name) == "link"
        }
        started: dict[str, ProcessRecord] = {}
        for name, args in wanted:
            if name in running:
                continue
            if name.startswith("worker-"):
                # a delayed region reaches Kafka only through its link
                region = name.removeprefix("worker-")
                link = f"127.0.0.1:{proxies[region]}" if proxies.get(region) else None
                started[name] = pipeline.start_worker(region, kafka_bootstrap=link)
                continue
            port = _port_of(settings.api_url) if name == "api" else None
            if name.startswith("gate-"):
                port = _port_of(settings.gate_urls[name.removeprefix("gate-")])
            started[name] = pipeline.start(name, args, port=port)
        time.sleep(0.5 if started else 0)
        dead = [n for n, r in started.items() if not r.alive]
        if dead:
            raise StackError(f"{dead[0]} exited at start{log_hint(started[dead[0]].log)}")
        return started

    def running(self) -> bool:
        """Whether this directory's stack has a live broker."""
        return any(r.name == "kafka" and r.alive for r in self.records())

    def worker_alive(self, region: str) -> bool:
        """Whether this stack runs a live worker for ``region``."""
        return any(r.name == f"worker-{region}" and r.alive for r in self.records())

    def add_worker(self, region: Region) -> ProcessRecord:
        """Start the worker of a newly added region and record it (and the region's settings)."""
        # the stack's worker runs with the stack's settings, whatever this command's are
        settings = set_regions(self.settings_file, add=region)
        settings = settings.with_overrides(state_dir=self.state_dir)
        name = f"worker-{region.name}"
        records = [r for r in self.records() if r.name != name]
        record = self._pipeline(settings).start_worker(region.name)
        self._save([*records, record])
        return record

    def remove_worker(self, region: str) -> bool:
        """Stop a region's worker (if this stack runs it) and drop the region from settings."""
        name = f"worker-{region}"
        stopped = False
        kept = []
        for record in self.records():
            if record.name == name:
                stopped = stop_pid(record.pid, record.argv[0] if record.argv else None)
            else:
                kept.append(record)
        self._save(kept)
        if read_settings_file(self.settings_file):
            set_regions(self.settings_file, drop=region)
        return stopped

    def described(self) -> dict[str, Any]:
        """Store (no password), Kafka and regions this stack runs with (its settings file)."""
        return describe(self.settings_file)

    # --- status and down --------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        """Every recorded process, with whether it is up (pid alive and port open)."""
        result = []
        for r in self.records():
            up = r.alive and (r.port is None or port_open(r.port))
            role = relay_role(Path(r.log)) if up and _kind(r.name) == "relay" else None
            result.append(ComponentStatus(r.name, r.pid, r.port, up, r.log, role))
        return result

    def down(self) -> list[str]:
        """Stop exactly the recorded processes, consumers first; return the names stopped."""
        stopped = []
        records = self.records()
        for r in sorted(records, key=lambda r: _STOP_ORDER.get(_kind(r.name), 9)):
            if _kind(r.name) == "kafka":
                continue  # last, all brokers at once (a cluster's quorum)
            program = r.argv[0] if r.argv else None
            if stop_pid(r.pid, program):
                stopped.append(r.name)
        brokers = [r for r in records if _kind(r.name) == "kafka"]
        stopped += [
            r.name for r, ran in zip(brokers, KafkaCluster.stop(brokers), strict=True) if ran
        ]
        self.state_file.unlink(missing_ok=True)
        return stopped


def _wait_for_ports(records: Iterable[ProcessRecord]) -> None:
    """Listeners (API, links) take a moment to bind after their process started."""
    for record in records:
        port = record.port
        if port is not None:
            wait_until(
                functools.partial(_listening, record, port), 20, record.name, Path(record.log)
            )


def _listening(record: ProcessRecord, port: int) -> bool:
    return port_open(port) or not pid_alive(record.pid)


def _listener(region: str) -> str:
    """Kafka listener name of a region's delayed link ([A-Z0-9_])."""
    return "REGION_" + "".join(c if c.isalnum() else "_" for c in region.upper())


def _bootstrap_of(records: Iterable[ProcessRecord]) -> str:
    """``host:port`` of every broker of the stack (node 1 first), comma separated."""
    brokers = sorted(
        (r for r in records if _kind(r.name) == "kafka" and r.port), key=lambda r: r.name
    )
    return ",".join(f"127.0.0.1:{r.port}" for r in brokers)


def _port_of(url: str) -> int | None:
    return urlsplit(url).port


def _port_of_bootstrap(settings: Settings) -> int | None:
    _, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    return int(port) if port.isdigit() else None


def _pick_port(wanted: int | None, previous: int | None) -> int:
    if wanted is not None:
        if port_open(wanted):
            raise StackError(f"port {wanted} is already in use")
        return wanted
    if previous is not None and not port_open(previous):
        return previous
    return free_port()
