"""The session's three-broker KRaft cluster, and faults on one of its nodes by node id.

One cluster serves every three-broker test (``tests/conftest.py``'s ``three_brokers``):
a test may SIGKILL, SIGSTOP or restart a node; the fixture heals the cluster after each
test (resumes, restarts, waits until every partition's ISR is whole again), so the next
test starts on three healthy brokers.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kafka.admin import KafkaAdminClient

from stack.kafka import KafkaCluster, KafkaJars
from stack.process import ProcessRecord, free_port, pid_alive
from tests.kafka_helpers import wait_for

__all__ = ["ThreeBrokers"]


class ThreeBrokers:
    """Three combined KRaft nodes (one quorum, modest heaps: 256 MiB max each) on loopback."""

    def __init__(self, jars: KafkaJars, root: Path, nodes: int = 3) -> None:
        self.cluster = KafkaCluster.build(
            jars, root, [(free_port(), free_port()) for _ in range(nodes)]
        )
        self.records: dict[int, ProcessRecord] = {}
        self.paused: set[int] = set()

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma separated."""
        return self.cluster.bootstrap

    @property
    def node_ids(self) -> list[int]:
        return [b.node_id for b in self.cluster.brokers]

    def start(self) -> None:
        records = self.cluster.start()
        self.records = {b.node_id: r for b, r in zip(self.cluster.brokers, records, strict=True)}
        self.cluster.wait_ready(records)

    def close(self) -> None:
        for node_id in list(self.paused):
            self.resume(node_id)  # a stopped JVM ignores SIGTERM until continued
        KafkaCluster.stop(list(self.records.values()))
        self.records = {}

    # --- faults by node id ----------------------------------------------------------
    def alive(self, node_id: int) -> bool:
        record = self.records.get(node_id)
        return record is not None and pid_alive(record.pid)

    def kill(self, node_id: int) -> None:
        """SIGKILL the node's JVM and wait until it is gone (no clean shutdown, no
        leadership hand-over: the controller notices by the missed heartbeats)."""
        record = self.records.pop(node_id)
        os.kill(record.pid, signal.SIGKILL)
        self.paused.discard(node_id)
        wait_for(lambda: not pid_alive(record.pid), 30, f"node {node_id} dead")

    def pause(self, node_id: int) -> None:
        """SIGSTOP the node: its sockets stay open but nothing answers (a hung broker)."""
        os.kill(self.records[node_id].pid, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        os.kill(self.records[node_id].pid, signal.SIGCONT)
        self.paused.discard(node_id)

    def restart(self, node_id: int) -> None:
        """Start a killed or stopped node again (same ports and data) until it has started."""
        if self.alive(node_id):
            raise AssertionError(f"node {node_id} is still running")
        self.records[node_id] = self.cluster.restart_node(node_id)

    # --- what the cluster says ------------------------------------------------------
    def describe(self, topics: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """kafka-python's topic descriptions (every topic when ``topics`` is None), asked of
        a running node; kafka-python's admin gives up on a dead bootstrap server, or sends
        to a node the metadata still lists while it is dead: then the next node, a few
        rounds, is asked."""
        wanted = None if topics is None else list(topics)
        error: Exception | None = None
        for _ in range(5):
            for broker in self.cluster.brokers:
                if not self.alive(broker.node_id) or broker.node_id in self.paused:
                    continue
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=broker.bootstrap,
                        request_timeout_ms=5000,
                        bootstrap_timeout_ms=5000,
                    )
                    try:
                        described: list[dict[str, Any]] = admin.describe_topics(wanted)
                        return described
                    finally:
                        admin.close()
                except Exception as e:  # starting, just died, or a dead peer: next one
                    error = e
            time.sleep(0.5)
        raise AssertionError(f"no running node answered: {type(error).__name__}: {error}")

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> leader node id of ``topic``."""
        (described,) = self.describe([topic])
        return {
            _get(p, "partition_index", "partition"): _get(p, "leader_id", "leader")
            for p in described["partitions"]
        }

    def busiest_leader(self, topic: str) -> int:
        """The node leading most of ``topic``'s partitions (ties: the lowest id)."""
        counts = collections.Counter(self.leaders(topic).values())
        return min(counts, key=lambda node: (-counts[node], node))

    def under_replicated(self, topics: Iterable[str] | None = None) -> list[str]:
        """``topic/partition`` of every partition whose ISR lacks a replica or that has no
        leader; empty when the cluster is whole."""
        short: list[str] = []
        for topic in self.describe(topics):
            for p in topic["partitions"]:
                isr, replicas = _get(p, "isr_nodes", "isr"), _get(p, "replica_nodes", "replicas")
                if _get(p, "leader_id", "leader") < 0 or set(isr) != set(replicas):
                    name = _get(topic, "name", "topic")
                    short.append(f"{name}/{_get(p, 'partition_index', 'partition')}")
        return short

    def wait_in_sync(self, topics: Iterable[str] | None = None, timeout_s: float = 90) -> None:
        """Until every partition (of ``topics``, else of every topic) has its whole ISR:
        a restarted node has caught up and rejoined."""
        last: list[str] = []

        def whole() -> bool:
            nonlocal last
            try:
                last = self.under_replicated(topics)
            except Exception as e:  # a node still starting may refuse the metadata request
                last = [f"({type(e).__name__}: {e})"]
                return False
            return not last

        try:
            wait_for(whole, timeout_s, "every ISR whole")
        except AssertionError as e:
            raise AssertionError(f"{e}; short: {last[:10]}") from None

    def heal(self) -> None:
        """Resume paused nodes, restart dead ones, wait until every ISR is whole."""
        for node_id in list(self.paused):
            self.resume(node_id)
        for node_id in self.node_ids:
            if not self.alive(node_id):
                self.records.pop(node_id, None)
                self.restart(node_id)
        self.wait_in_sync()


def _get(described: dict[str, Any], key: str, older: str) -> Any:
    """A field of kafka-python's metadata answer (3.x names, else the older shape's)."""
    return described[key] if key in described else described[older]


def start_three_brokers(jars: KafkaJars, root: Path) -> ThreeBrokers:
    """Start the cluster; on a start-up failure stop whatever did start."""
    brokers = ThreeBrokers(jars, root)
    try:
        brokers.start()
    except BaseException:
        with contextlib.suppress(Exception):
            KafkaCluster.stop(list(brokers.records.values()))
        raise
    return brokers
