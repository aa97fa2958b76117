"""The gate's settings and shared metrics, without servers."""

from __future__ import annotations

import pytest

from gate.app import GateResponse
from gate.http import encode_response
from gate.metrics import GateMetrics
from shared.errors import ConfigError
from shared.settings import Settings


def test_gate_clients_and_urls_parse_and_round_trip_through_the_environment() -> None:
    settings = Settings.from_env(
        {
            "TOKENSYNC_GATE_CLIENTS": "laravel:0123456789abcdef, go-svc:fedcba9876543210",
            "TOKENSYNC_GATES": "eu=http://127.0.0.1:8181,us=http://10.0.0.2:8181",
        }
    )
    assert {"laravel": "0123456789abcdef", "go-svc": "fedcba9876543210"} == dict(
        settings.gate_clients
    )
    assert "0123456789abcdef" not in repr(settings)
    assert settings == Settings.from_env(settings.to_env())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATE_CLIENTS", "laravel:short", "under 16"),
        ("GATE_CLIENTS", "no-secret-here", "CLIENT_ID:SECRET"),
        ("GATE_CLIENTS", ":0123456789abcdef", "CLIENT_ID:SECRET"),
        ("GATES", "eu=redis://h:1/0", "REGION=http"),
        ("GATES", "eu", "REGION=http"),
    ],
)
def test_a_malformed_gate_setting_is_one_clear_config_error(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({f"TOKENSYNC_{name}": value})


def test_metrics_sum_every_workers_row_into_one_exposition() -> None:
    metrics = GateMetrics(workers=2)
    metrics.observe("auth", "valid", 0.0003)
    metrics.worker = 1
    metrics.observe("auth", "valid", 0.002)
    metrics.observe("introspect", "invalid_client", 5.0)
    text = metrics.render('e"u').decode()
    assert 2 == metrics.count("auth", "valid")
    assert 'tokensync_gate_requests_total{region="e\\"u",route="auth",outcome="valid"} 2' in text
    assert (
        'tokensync_gate_request_seconds_bucket{region="e\\"u",route="auth",le="0.0005"} 1' in text
    )
    assert 'tokensync_gate_request_seconds_bucket{region="e\\"u",route="auth",le="+Inf"} 2' in text
    assert (
        'tokensync_gate_request_seconds_bucket{region="e\\"u",route="introspect",le="1.0"} 0'
        in text
    )
    assert 'tokensync_gate_request_seconds_count{region="e\\"u",route="introspect"} 1' in text


def test_a_response_is_one_well_formed_http_message() -> None:
    response = GateResponse(401, [("WWW-Authenticate", 'Bearer realm="tokensync"')], b"{}")
    assert (
        b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
        b'WWW-Authenticate: Bearer realm="tokensync"\r\n\r\n{}'
    ) == encode_response(response, keep_alive=True)
    closing = encode_response(GateResponse(200, body=b"x"), keep_alive=False, head=True)
    assert closing.endswith(b"connection: close\r\n\r\n")


def test_compose_runs_one_gate_per_region_it_configures() -> None:
    from pathlib import Path

    import yaml

    compose = Path(__file__).resolve().parents[2] / "compose.yaml"
    services = yaml.safe_load(compose.read_text())["services"]
    regions = services["relay"]["environment"]["TOKENSYNC_REGIONS"]
    names = {item.split("=")[0] for item in regions.split(",")}
    gates = {
        s["command"][s["command"].index("--region") + 1]
        for s in services.values()
        if s.get("command", [""])[:2] == ["tokensync", "gate"]
    }
    assert names == gates


def test_the_gate_imports_shared_only_never_the_authority_or_the_workers() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, gate, gate.commands, gate.server, gate.fallback; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'producer', 'workers', 'bench', 'faust', 'aiokafka', 'kafka', 'sqlalchemy', "
        "'fastapi'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "[]" == done.stdout.strip()
