"""``tokensync doctor``: a healthy pipeline passes; each guarantee broken on purpose is
reported with its fix, and the exit code says how bad (0 pass, 1 warn, 2 fail)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from producer.triggers import drop_statements
from shared.cli import main
from shared.settings import Region
from tests.harness import Pipeline

pytestmark = pytest.mark.integration


def doctor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pipeline: Pipeline
) -> tuple[int, dict[str, dict[str, Any]]]:
    for key, value in pipeline.settings.to_env().items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(["doctor", "--json"])
    out = capsys.readouterr().out
    return code, {c["check"]: c for c in json.loads(out)}


def outcomes(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: c["outcome"] for name, c in checks.items()}


def test_a_healthy_pipeline_passes_and_each_broken_guarantee_is_reported(
    pipeline: Pipeline,
    own_redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline.start_relay()
    for region in pipeline.settings.regions:
        pipeline.start_worker(region.name)
    for region in pipeline.settings.regions:
        pipeline.wait_ready(region.name)
    code, checks = doctor(monkeypatch, capsys, pipeline)
    assert {"pass"} == set(outcomes(checks).values()), checks
    assert 0 == code
    assert {"triggers", "store clock", "relay backlog", "kafka cleanup.policy"} <= set(checks)
    assert {f"region {r.name} eviction" for r in pipeline.settings.regions} <= set(checks)

    # A region whose Redis may evict keys, and that no worker feeds: two failures.
    evicting = redis.Redis.from_url(own_redis_url)
    evicting.config_set("maxmemory-policy", "allkeys-lru")
    evicting.close()
    pipeline.settings = pipeline.settings.with_overrides(
        regions=(*pipeline.settings.regions, Region("lru", own_redis_url))
    )
    code, checks = doctor(monkeypatch, capsys, pipeline)
    assert 2 == code
    assert "fail" == checks["region lru eviction"]["outcome"]
    assert "noeviction" in checks["region lru eviction"]["fix"]
    assert "fail" == checks["region lru ready"]["outcome"]
    assert "worker" in checks["region lru ready"]["fix"]

    # Triggers dropped behind tokensync's back (migrate:fresh, a restore).
    with pipeline.store.engine.begin() as conn:
        for statement in drop_statements(pipeline.store.engine.dialect.name):
            conn.execute(sa.text(statement))
    code, checks = doctor(monkeypatch, capsys, pipeline)
    assert 2 == code
    assert "fail" == checks["triggers"]["outcome"]
    assert "tokensync store repair" == checks["triggers"]["fix"]


def test_a_token_topic_without_compaction_fails_and_mysqls_drop_privilege_warns(
    tmp_path: Any,
    kafka_bootstrap: str,
    mysql_url: str,
    region_urls: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    from shared.keys import Topics

    topics = Topics(prefix="tdoc" + tmp_path.name[-8:].replace("_", "").replace("-", ""))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topics.tokens, 3, 1, topic_configs={"cleanup.policy": "delete"})])
    admin.close()
    pipeline = Pipeline(tmp_path, kafka_bootstrap, mysql_url, topics, {"eu": region_urls["eu"]})
    try:
        code, checks = doctor(monkeypatch, capsys, pipeline)
    finally:
        pipeline.close()
    assert 2 == code
    assert "fail" == checks["kafka cleanup.policy"]["outcome"]
    assert "cleanup.policy=compact" in checks["kafka cleanup.policy"]["fix"]
    # the test server's user holds ALL PRIVILEGES: TRUNCATE would bypass the triggers
    assert "warn" == checks["truncate privilege"]["outcome"]
    assert "pass" == checks["triggers"]["outcome"]
