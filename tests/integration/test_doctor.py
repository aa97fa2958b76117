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
from shared.region_keys import RegionKeys
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
    pipeline.settings = pipeline.settings.with_overrides(  # without them doctor warns
        region_keys=RegionKeys(
            {r.name: {f"{r.name}-1": r.name.encode() * 16} for r in pipeline.settings.regions}
        )
    )
    pipeline.start_relay()
    for region in pipeline.settings.regions:
        pipeline.start_worker(region.name)
    for region in pipeline.settings.regions:
        pipeline.wait_ready(region.name)
    code, checks = doctor(monkeypatch, capsys, pipeline)
    assert {"pass"} == set(outcomes(checks).values()), [
        c for c in checks.values() if c["outcome"] != "pass"
    ]
    assert 0 == code
    assert {"triggers", "store clock", "relay backlog", "kafka cleanup.policy"} <= set(checks)
    assert {f"region {r.name} eviction" for r in pipeline.settings.regions} <= set(checks)
    for region in pipeline.settings.regions:
        assert "pass" == checks[f"region {region.name} clock"]["outcome"]
        assert "pass" == checks[f"region {region.name} signing keys"]["outcome"]

    # The relay's keyring gains a key its regions' workers were not given: what it signs
    # with that key would be dead-lettered in every region.
    keys = pipeline.settings.signing_keys
    pipeline.settings = pipeline.settings.with_overrides(
        signing_keys={**keys, "test-next": b"n" * 32}
    )
    code, checks = doctor(monkeypatch, capsys, pipeline)
    assert 2 == code
    for region in pipeline.settings.regions:
        check = checks[f"region {region.name} signing keys"]
        assert "fail" == check["outcome"], check
        assert "lacks test-next" in check["detail"]
        assert "TOKENSYNC_SIGNING_KEYS" in check["fix"]
    pipeline.settings = pipeline.settings.with_overrides(signing_keys=keys)

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


def test_a_region_clock_skewed_from_the_stores_beyond_the_allowance_fails(
    tmp_path: Any,
    kafka_bootstrap: str,
    postgres_url: str,
    topics: Any,
    region_urls: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = Pipeline(tmp_path, kafka_bootstrap, postgres_url, topics, {"eu": region_urls["eu"]})
    try:
        # The database's clock runs 3 s slow: a clock_timestamp() of the test's schema,
        # searched before pg_catalog's, stands in for a host NTP no longer steers.
        schema = postgres_url.split("search_path%3D")[1].split("&", maxsplit=1)[0]
        with pipeline.store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f'CREATE FUNCTION "{schema}".clock_timestamp() RETURNS timestamptz '
                    "LANGUAGE sql AS $$ SELECT pg_catalog.clock_timestamp() - interval '3 s' $$"
                )
            )
        code, checks = doctor(monkeypatch, capsys, pipeline)
        assert "pass" == checks["region eu clock"]["outcome"], checks["region eu clock"]
        pipeline.settings = pipeline.settings.with_overrides(
            database_url=postgres_url.replace(
                f"search_path%3D{schema}", f"search_path%3D{schema}%2Cpg_catalog"
            )
        )
        code, checks = doctor(monkeypatch, capsys, pipeline)
        assert 2 == code
        clock = checks["region eu clock"]
        assert "fail" == clock["outcome"], clock
        assert "ahead of the store's" in clock["detail"]
        assert "NTP" in clock["fix"]
        # within a larger allowance the same skew is only a warning
        pipeline.settings = pipeline.settings.with_overrides(clock_skew_allowance_s=10.0)
        code, checks = doctor(monkeypatch, capsys, pipeline)
        assert "warn" == checks["region eu clock"]["outcome"], checks["region eu clock"]
    finally:
        pipeline.close()
