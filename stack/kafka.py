"""Apache Kafka in KRaft mode from its official jars on Maven Central.

``KafkaJars.ensure()`` fetches a pinned release once into a cache folder with
Maven; ``KafkaBroker`` writes a combined (broker + controller) node's config,
formats storage and runs ``kafka.Kafka`` with the installed JDK. A single node is the
default; ``KafkaCluster`` runs N combined nodes that form one controller quorum (the
internal topics then get min(3, N) replicas). A node may also open a SASL_PLAINTEXT
listener whose SCRAM users are written at format time (``--add-scram``).

Over 350 lines: the one server we run from jars rather than packages: fetching the
jars, one node's config and storage, and the quorum of N nodes share that machinery.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared.errors import PrerequisiteError, StackError
from stack.process import ProcessRecord, log_hint, port_open, start_process, stop_pid

__all__ = ["KAFKA_VERSION", "KafkaBroker", "KafkaCluster", "KafkaJars", "default_cache_dir"]

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
READY_LINE = "Kafka Server started"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tokensync.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


def default_cache_dir() -> Path:
    """``$TOKENSYNC_CACHE_DIR``, else ``$XDG_CACHE_HOME/tokensync``, else ``~/.cache/tokensync``."""
    explicit = os.environ.get("TOKENSYNC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tokensync"


def _require(program: str, why: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise PrerequisiteError(f"{program} not found on PATH: {why}")
    return found


@dataclass(frozen=True)
class KafkaJars:
    """A pinned Kafka release's jars in a cache folder, fetched once."""

    cache_dir: Path
    version: str = KAFKA_VERSION

    @property
    def libs(self) -> Path:
        """The folder holding every jar on the broker's classpath."""
        return self.cache_dir / f"kafka-{self.version}" / "libs"

    @property
    def present(self) -> bool:
        """Whether a complete fetch is already cached."""
        return (self.libs.parent / "complete").exists()

    def ensure(self) -> Path:
        """Fetch the jars unless cached; return the libs folder."""
        if self.present:
            return self.libs
        mvn = _require("mvn", "Maven fetches the Kafka jars (apt-get install maven)")
        _require("java", "Kafka needs a JDK 17+ (apt-get install openjdk-17-jdk-headless)")
        work = self.libs.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = work / "pom.xml"
        pom.write_text(_POM.format(kafka=self.version, log4j=LOG4J_VERSION))
        staging = work / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise StackError(f"fetching Kafka {self.version} jars failed: {' | '.join(tail)}")
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        (work / "complete").write_text(self.version + "\n")
        return self.libs

    def classpath(self) -> str:
        """The ``-cp`` argument for the JVM."""
        return str(self.libs / "*")


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding (what StorageTool expects)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# the compaction cleaner's dedupe buffer: small stacks compact small topics
CLEANER_BUFFER_BYTES = 8 * 1024 * 1024
# A crashed node's partitions have no leader until the controller fences it, after this
# long without its heartbeat (Kafka's 9 s default outlasts the 5 s staleness budget, and
# every region went stale when a leader was SIGKILLed); 3 s plus a client's metadata
# refresh fits the budget. Cluster nodes only (a single node has no one to fail over to).
BROKER_SESSION_TIMEOUT_MS = 3000
BROKER_HEARTBEAT_INTERVAL_MS = 500


@dataclass(frozen=True)
class KafkaBroker:
    """A KRaft node (broker and controller in one JVM) on loopback: alone by default, or
    one voter of a cluster's controller quorum (``node_id``, ``voters``, ``cluster_id``)."""

    jars: KafkaJars
    data_dir: Path
    port: int
    controller_port: int
    heap: str = "512m"
    # (listener name, port it binds, port it advertises): a region behind a delaying proxy
    # needs a listener whose advertised address is the proxy (clients reconnect to it).
    extra_listeners: tuple[tuple[str, int, int], ...] = ()
    node_id: int = 1
    voters: str = ""  # "1@127.0.0.1:port,2@...": empty for a single node
    cluster_id: str = ""  # shared by the nodes of a cluster; empty: a new one
    min_heap: str = ""  # -Xms; empty: the same as heap
    # a SASL_PLAINTEXT listener (SCRAM-SHA-512/256, PLAIN) on this port; 0: none
    sasl_port: int = 0
    # (mechanism, user, password) created at format time (SCRAM) or in the JAAS (PLAIN)
    sasl_users: tuple[tuple[str, str, str], ...] = ()
    replication: int = 1  # replicas of the internal topics (offsets, transactions)

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """Where the broker's console output goes."""
        return self.data_dir / "kafka.log"

    @property
    def sasl_bootstrap(self) -> str:
        """The ``host:port`` of the SASL_PLAINTEXT listener (``sasl_port`` must be set)."""
        return f"127.0.0.1:{self.sasl_port}"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra = "".join(f",{n}://127.0.0.1:{bind}" for n, bind, _ in self.extra_listeners)
        advertised = "".join(f",{n}://127.0.0.1:{adv}" for n, _, adv in self.extra_listeners)
        protocols = "".join(f",{n}:PLAINTEXT" for n, _, _ in self.extra_listeners)
        if self.sasl_port:
            extra += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            advertised += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        rf, isr = str(self.replication), str(min(2, self.replication))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters
            or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
                + extra
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}" + advertised,
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
            + protocols,
            "log.dirs": str(self.data_dir / "kraft-combined-logs"),
            "num.partitions": "6",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.cleaner.backoff.ms": "1000",
            # the cleaner allocates this up front (default 128 MiB): in a 256 MiB heap a
            # loaded machine saw OutOfMemoryError in LogManager start-up
            "log.cleaner.dedupe.buffer.size": str(CLEANER_BUFFER_BYTES),
            **self._sasl_props(),
            **self._failover_props(),
        }
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _failover_props(self) -> dict[str, str]:
        if not self.voters:
            return {}
        return {
            "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(BROKER_HEARTBEAT_INTERVAL_MS),
        }

    def _sasl_props(self) -> dict[str, str]:
        if not self.sasl_port:
            return {}
        mechanisms = sorted({m for m, _, _ in self.sasl_users} or {"SCRAM-SHA-512"})
        props = {"sasl.enabled.mechanisms": ",".join(mechanisms)}
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        for mechanism in mechanisms:
            key = f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"
            if mechanism == "PLAIN":
                users = " ".join(f'user_{u}="{p}"' for m, u, p in self.sasl_users if m == "PLAIN")
                props[key] = (
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
                )
            else:
                props[key] = scram
        return props

    def _java(self) -> list[str]:
        java = _require("java", "Kafka needs a JDK 17+ (apt-get install openjdk-17-jdk-headless)")
        return [
            java,
            f"-Xms{self.min_heap or self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(self.data_dir / 'log4j2.properties').resolve()}",
            "-cp",
            self.jars.classpath(),
        ]

    def format_storage(self) -> Path:
        """Write the config and format the log dir (a no-op if already formatted)."""
        config = self._write_config()
        marker = self.data_dir / "kraft-combined-logs" / "meta.properties"
        if marker.exists():
            return config
        cluster_id = self.cluster_id or new_cluster_id()
        scram = [
            f"--add-scram={m}=[name={u},password={p}]"
            for m, u, p in self.sasl_users
            if m.startswith("SCRAM-")
        ]
        cmd = [
            *self._java(),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",  # '=' form: an id may start with '-'
            "-c",
            str(config),
            "--ignore-formatted",
            *scram,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            error = result.stderr.strip()[-300:]
            for _, _, password in self.sasl_users:
                error = error.replace(password, "***")
            raise StackError(f"formatting Kafka storage failed: {error}")
        return config

    def start(self) -> ProcessRecord:
        """Format if needed and start the broker process (returns at once)."""
        config = self.format_storage()
        argv = [*self._java(), "kafka.Kafka", str(config)]
        # node 1 is "kafka": what status, down and "is a stack running" look for
        name = "kafka" if self.node_id == 1 else f"kafka-{self.node_id}"
        return start_process(name, argv, self.log_file, port=self.port)

    def log_size(self) -> int:
        """The console log's length now: a restart appends to it (``wait_ready``'s ``since``)."""
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_ready(self, record: ProcessRecord, timeout_s: float = 90.0, since: int = 0) -> None:
        """Block until the broker logged its readiness line (after byte ``since`` of its log:
        a restarted node's log still holds the previous run's) and its port is open."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not record.alive:
                raise StackError(f"Kafka exited during start-up{log_hint(self.log_file)}")
            try:
                with self.log_file.open("rb") as log:
                    log.seek(since)
                    started = READY_LINE.encode() in log.read()
            except FileNotFoundError:
                started = False
            if started and port_open(self.port):
                return
            time.sleep(0.1)
        raise StackError(f"Kafka did not start within {timeout_s:.0f} s; see {self.log_file}")


@dataclass(frozen=True)
class KafkaCluster:
    """``len(brokers)`` combined KRaft nodes forming one controller quorum (every node a
    voter): three such nodes tolerate the loss of one. Heaps stay modest (256 MiB max
    each) so three fit next to everything else on a small machine."""

    brokers: tuple[KafkaBroker, ...]

    @classmethod
    def build(
        cls,
        jars: KafkaJars,
        data_dir: Path,
        ports: Sequence[tuple[int, int]],
        *,
        heap: str = "256m",
        min_heap: str = "128m",
        sasl_ports: Sequence[int] = (),
        sasl_users: tuple[tuple[str, str, str], ...] = (),
    ) -> KafkaCluster:
        """Nodes 1..N with (client port, controller port) each, in ``data_dir/node-<id>``;
        a node keeps the cluster id it was formatted with."""
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports, start=1))
        id_file = data_dir / "cluster.id"
        if id_file.exists():
            cluster_id = id_file.read_text().strip()
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            id_file.write_text(cluster_id + "\n")
        brokers = tuple(
            KafkaBroker(
                jars,
                data_dir / f"node-{i}",
                port,
                controller,
                heap,
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
                min_heap=min_heap,
                sasl_port=sasl_ports[i - 1] if sasl_ports else 0,
                sasl_users=sasl_users,
                replication=min(3, len(ports)),
            )
            for i, (port, controller) in enumerate(ports, start=1)
        )
        return cls(brokers)

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma separated."""
        return ",".join(b.bootstrap for b in self.brokers)

    def start(self) -> list[ProcessRecord]:
        """Format and start every node (a quorum needs a majority up, so all at once)."""
        for broker in self.brokers:
            broker.format_storage()
        return [broker.start() for broker in self.brokers]

    def wait_ready(self, records: Sequence[ProcessRecord], timeout_s: float = 120.0) -> None:
        """Block until every node logged its readiness line."""
        deadline = time.monotonic() + timeout_s
        for broker, record in zip(self.brokers, records, strict=True):
            broker.wait_ready(record, max(1.0, deadline - time.monotonic()))

    def node(self, node_id: int) -> KafkaBroker:
        """The node with ``node_id`` (1..N)."""
        for broker in self.brokers:
            if broker.node_id == node_id:
                return broker
        raise StackError(f"no Kafka node {node_id} in a cluster of {len(self.brokers)}")

    def restart_node(self, node_id: int, timeout_s: float = 90.0) -> ProcessRecord:
        """Start node ``node_id`` again (after it died or was stopped: same ports, same log
        dir) and wait until it has started; rejoining the ISRs takes a moment longer."""
        broker = self.node(node_id)
        since = broker.log_size()
        record = broker.start()
        broker.wait_ready(record, timeout_s, since)
        return record

    @staticmethod
    def stop(records: Sequence[ProcessRecord]) -> list[bool]:
        """Stop every node at once: a node stopped after its peers would wait for a quorum
        that is gone (each is escalated to SIGKILL after the grace time). Per record:
        whether it had been running."""
        with ThreadPoolExecutor(max_workers=max(1, len(records))) as pool:
            futures = [pool.submit(stop_pid, r.pid, r.argv[0] if r.argv else None) for r in records]
            return [f.result() for f in futures]
