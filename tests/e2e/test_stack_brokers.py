"""``tokensync stack up --brokers 3``: a three-node KRaft cluster from the same jars, recorded
in the settings file with every broker, replicated topics, and ``stack down`` stops it all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from producer.kafka_io import KafkaAdmin
from shared.keys import Topics
from shared.settings import Settings, read_settings_file
from stack.process import pid_alive
from tests.e2e.test_stack import tokensync
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.e2e


def test_stack_up_with_three_brokers_runs_a_replicated_cluster_and_down_stops_it(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, Any]] = []
    try:
        tokensync(tmp_path, "stack", "up", "--no-apps", "--brokers", "3", "--regions", "eu")
        rows = json.loads(tokensync(tmp_path, "stack", "status", "--json").stdout)["processes"]
        assert {"kafka", "kafka-2", "kafka-3", "redis-eu"} == {r["name"] for r in rows}
        assert all(r["up"] for r in rows), rows
        kafka_ports = {r["port"] for r in rows if r["name"].startswith("kafka")}

        settings = Settings.from_env(read_settings_file(tmp_path / ".tokensync/settings.env"))
        assert {f"127.0.0.1:{p}" for p in kafka_ports} == set(settings.kafka_bootstrap.split(","))
        admin = KafkaAdmin(settings.kafka_bootstrap)
        try:
            assert 3 == admin.brokers()
            topics = Topics(settings.topic_prefix)
            admin.ensure_topics(topics, settings.partitions)
            # a just-created topic reaches every node's metadata a moment later (CI saw None)
            wait_for(
                lambda: admin.replication(topics.tokens) is not None, 30, "the topic described"
            )
            assert 3 == admin.replication(topics.tokens)
        finally:
            admin.close()
        heaps = [
            json.loads((tmp_path / ".tokensync/stack.json").read_text())["processes"][i]["argv"]
            for i in range(len(rows))
        ]
        assert all("-Xmx256m" in argv for argv in heaps if "kafka.Kafka" in argv)
        assert 3 == sum("kafka.Kafka" in argv for argv in heaps)
    finally:
        down = tokensync(tmp_path, "stack", "down", "--json", check=False)
    assert down.returncode == 0, down.stderr
    assert {"kafka", "kafka-2", "kafka-3"} <= set(json.loads(down.stdout)["stopped"])
    assert [r["name"] for r in rows if pid_alive(r["pid"])] == []
