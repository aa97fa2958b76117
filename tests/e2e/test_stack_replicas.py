"""``tokensync stack up --replicas 1``: each region's Redis gets a read replica, the settings
name it, ``stack status`` shows it, workers write to the primary and ``validate`` reads the
replica."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.keys import MetaField, RedisKeys
from shared.settings import Settings, read_settings_file
from stack.process import pid_alive
from tests.e2e.test_stack import tokensync

pytestmark = pytest.mark.e2e
USER = "App\\Models\\User"


def _scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


def test_stack_up_with_one_replica_per_region_runs_it_and_validate_reads_it(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, Any]] = []
    try:
        tokensync(tmp_path, "stack", "up", "--replicas", "1", "--regions", "eu")
        data = json.loads(tokensync(tmp_path, "stack", "status", "--json").stdout)
        rows = data["processes"]
        assert {"redis-eu", "redis-eu-replica1", "worker-eu"} <= {r["name"] for r in rows}
        assert all(r["up"] for r in rows), rows
        replica_port = next(r["port"] for r in rows if r["name"] == "redis-eu-replica1")
        settings = Settings.from_env(read_settings_file(tmp_path / ".tokensync/settings.env"))
        eu = settings.region("eu")
        assert (f"redis://127.0.0.1:{replica_port}/0",) == eu.replicas
        assert data["regions"] == [{"name": "eu", "redis_url": eu.spec}]
        shown = tokensync(tmp_path, "stack", "status").stdout
        assert f"replicas=redis://127.0.0.1:{replica_port}/0" in shown

        replica = redis.Redis.from_url(eu.replicas[0])
        assert "slave" == replica.info("replication")["role"]
        token = tokensync(
            tmp_path, "token", "issue", "--type", USER, "--id", "7", "--name", "r"
        ).stdout.strip()
        for _ in range(200):
            code = tokensync(tmp_path, "validate", token, "--region", "eu", check=False)
            if code.returncode == 0:
                break
        assert 0 == code.returncode, code.stdout + code.stderr
        before = _scripts_run(replica)
        tokensync(tmp_path, "validate", token, "--region", "eu")
        assert _scripts_run(replica) == before + 1, "validate did not read the replica"
        # the replica holds the region's cache, written by the worker on the primary
        assert replica.hget(RedisKeys(settings.redis_namespace).meta, MetaField.READY) == b"1"
        replica.close()
    finally:
        down = tokensync(tmp_path, "stack", "down", "--json", check=False)
    assert down.returncode == 0, down.stderr
    assert "redis-eu-replica1" in json.loads(down.stdout)["stopped"]
    assert [r["name"] for r in rows if pid_alive(r["pid"])] == []
