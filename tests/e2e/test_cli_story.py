"""The whole story through the ``tokensync`` command on a real local stack."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_stack import tokensync

pytestmark = pytest.mark.e2e
USER = "App\\Models\\User"


def test_stack_demo_validate_and_region_lifecycle(tmp_path: Path, own_redis_url: str) -> None:
    try:
        tokensync(tmp_path, "stack", "up", "--regions", "eu,us")
        status = json.loads(tokensync(tmp_path, "stack", "status", "--json").stdout)["processes"]
        assert {
            "kafka",
            "redis-eu",
            "redis-us",
            "relay",
            "api",
            "worker-eu",
            "worker-us",
            "gate-eu",
            "gate-us",
        } == {r["name"] for r in status}
        gates = {r["name"]: r for r in status if r["name"].startswith("gate-")}
        assert all(g["up"] and g["port"] for g in gates.values())

        demo = tokensync(tmp_path, "demo", "--json", check=False)
        assert 0 == demo.returncode, demo.stdout + demo.stderr
        report = json.loads(demo.stdout)
        assert report["ok"]
        revocations = [s for s in report["steps"] if s["name"] == "revoke"]
        assert 3 == len(revocations)
        assert all(set(s["per_region_ms"]) == {"eu", "us"} for s in revocations)
        (through_gate,) = [s for s in report["steps"] if s["name"] == "gate"]
        assert through_gate["ok"] and {"eu", "us"} == set(through_gate["per_region_ms"])
        assert "X-Tokensync-Principal-Id: 1001" in through_gate["note"]

        token = tokensync(
            tmp_path,
            "token",
            "issue",
            "--type",
            USER,
            "--id",
            "77",
            "--name",
            "cli",
            "--ability",
            "read",
        ).stdout.strip()
        assert token.count("|") == 1
        codes = {}
        for name, args in {
            "valid": ["--ability", "read"],
            "forbidden": ["--ability", "write"],
            "any": ["--ability", "write", "--ability", "read", "--any"],
        }.items():
            for _ in range(100):  # the new token reaches the region within milliseconds
                codes[name] = tokensync(
                    tmp_path, "validate", token, "--region", "eu", *args, check=False
                ).returncode
                if codes[name] != 1:
                    break
        assert {"valid": 0, "forbidden": 2, "any": 0} == codes
        bad = tokensync(
            tmp_path, "validate", "not-a-token", "--region", "eu", "--json", check=False
        )
        assert (1, "malformed") == (bad.returncode, json.loads(bad.stdout)["reason"])

        gate_url = f"http://127.0.0.1:{gates['gate-us']['port']}"
        answer = httpx.get(
            f"{gate_url}/auth?ability=read", headers={"Authorization": f"Bearer {token}"}
        )
        assert (200, "77") == (answer.status_code, answer.headers["x-tokensync-principal-id"])

        token_id = token.split("|")[0]
        revoked = tokensync(tmp_path, "token", "revoke", token_id, "--wait", "--json")
        assert json.loads(revoked.stdout)["receipt"]["complete"]
        assert 1 == tokensync(tmp_path, "validate", token, "--region", "us", check=False).returncode

        added = tokensync(tmp_path, "region", "add", "ap", "--redis", own_redis_url, "--json")
        assert json.loads(added.stdout)["ready"]
        regions = json.loads(tokensync(tmp_path, "region", "status", "--json").stdout)
        assert {"eu", "us", "ap"} == {r["region"] for r in regions}
        assert all(r["ready"] and r["lag"] == 0 for r in regions)
        removed = json.loads(tokensync(tmp_path, "region", "remove", "ap", "--json").stdout)
        assert removed["worker_stopped"] and removed["group_deleted"]
        assert ["eu", "us"] == [
            r["region"] for r in json.loads(tokensync(tmp_path, "region", "list", "--json").stdout)
        ]
    finally:
        tokensync(tmp_path, "stack", "down", check=False)


def test_wrong_arguments_print_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    for args in (
        ["token", "revoke", "abc"],
        ["revoke", "all", "--before", "yesterday"],
        ["token", "issue", "--type", USER, "--id", "1", "--name", "x", "--ability", ""],
        ["validate", "abc"],
        ["region", "remove", "nowhere"],
        ["nosuchcommand"],
    ):
        result = tokensync(tmp_path, *args, check=False)
        assert 0 != result.returncode, args
        assert 1 == len(result.stderr.strip().splitlines()), (args, result.stderr)
