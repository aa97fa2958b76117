"""Where people and alerting see findings: ``tokensync findings`` (and its dry run),
``GET /v1/findings``, Prometheus metrics, and ``tokensync watch`` piped and at a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from producer.detectors import Detector, Watch, WatchSettings
from producer.store import TokenStore
from tests.cli_helpers import run_at_terminal, run_cli
from tests.integration.watch_helpers import Traffic

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"


def _jump(store: TokenStore, owner: int = 7) -> None:
    settings = WatchSettings().with_detector(Detector.PRINCIPAL_JUMP, threshold=3)
    for n in range(3):
        store.issue(USER, owner, f"burst {n}")
    Watch(store, settings).tick(force=True)


def test_tokensync_findings_lists_them_as_text_and_json_and_its_dry_run_revokes_nothing(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _jump(store)
    text = run_cli(monkeypatch, capsys, database_url, "findings", "--since", "1h")
    assert 0 == text.code, text.err
    assert "principal_jump" in text.out and f"{USER}:7 was issued 3 tokens" in text.out
    listed = run_cli(monkeypatch, capsys, database_url, "findings", "--json")
    [finding] = json.loads(listed.out)
    assert ("principal_jump", "alert", "alerted") == (
        finding["detector"],
        finding["reaction"],
        finding["outcome"],
    )
    dry = run_cli(
        monkeypatch,
        capsys,
        database_url,
        "findings",
        "--dry-run",
        "--policy",
        "principal_jump=revoke-principal",
        "--json",
    )
    assert 0 == dry.code, dry.err
    [plan] = json.loads(dry.out)
    assert ("revoke-principal", True) == (plan["reaction"], plan["live"])
    assert 3 == len(store.list_tokens(USER, 7)), "a dry run revokes nothing"
    wrong = run_cli(monkeypatch, capsys, database_url, "findings", "--policy", "dormant=nuke")
    assert 2 == wrong.code
    assert 1 == len((wrong.out + wrong.err).strip().splitlines()), "one line, no traceback"


def test_get_v1_findings_needs_the_audit_ability_and_lists_the_findings(
    store: TokenStore, client: httpx.Client
) -> None:
    _jump(store)
    reader = store.issue(ADMIN, 1, "auditor", ["audit:read"]).plain_text_token
    issuer = store.issue(ADMIN, 2, "issuer", ["tokens:issue"]).plain_text_token
    user = store.issue(USER, 3, "user", ["*"]).plain_text_token

    assert 401 == client.get("/v1/findings").status_code
    assert (
        401 == client.get("/v1/findings", headers={"Authorization": f"Bearer {user}"}).status_code
    )
    assert (
        403 == client.get("/v1/findings", headers={"Authorization": f"Bearer {issuer}"}).status_code
    )
    response = client.get(
        "/v1/findings", params={"since": "1h"}, headers={"Authorization": f"Bearer {reader}"}
    )
    assert 200 == response.status_code
    assert ["principal_jump"] == [f["detector"] for f in response.json()]
    bad = client.get(
        "/v1/findings", params={"detector": "nope"}, headers={"Authorization": f"Bearer {reader}"}
    )
    assert 422 == bad.status_code


def test_findings_and_invalid_presentations_are_prometheus_counters(
    store: TokenStore, region_urls: dict[str, str]
) -> None:
    def value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    found = {"detector": "principal_jump", "reaction": "alert"}
    before = value("tokensync_findings_total", found)
    invalid_before = value("tokensync_usage_invalid_presentations_total", {"region": "eu"})
    _jump(store)
    traffic = Traffic(region_urls)
    try:
        traffic.present("eu", "7|" + "x" * 48, 3)
        Watch(store, WatchSettings()).ingest(traffic.forward())
    finally:
        traffic.close()
    assert 1 == value("tokensync_findings_total", found) - before
    assert (
        3 == value("tokensync_usage_invalid_presentations_total", {"region": "eu"}) - invalid_before
    )


def test_tokensync_watch_piped_prints_one_snapshot_and_at_a_terminal_redraws_until_ctrl_c(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.conftest import migrated_store

    with migrated_store(sqlite_url) as store:
        _jump(store)
    piped = run_cli(monkeypatch, capsys, sqlite_url, "watch")
    assert 0 == piped.code, piped.err
    assert "top tokens" in piped.out and "principal_jump" in piped.out
    snapshot = json.loads(run_cli(monkeypatch, capsys, sqlite_url, "watch", "--json").out)
    assert {"at", "window_s", "top_tokens", "regions", "findings"} == set(snapshot)

    live = run_at_terminal(
        tmp_path,
        ["watch", "--every", "0.2"],
        interrupt_when=b"principal_jump",
        timeout_s=60,
        env_extra={"TOKENSYNC_DATABASE_URL": sqlite_url},
    )
    assert 0 == live.code, live.out
    assert "Traceback" not in live.out
    assert "stopped" in live.out
