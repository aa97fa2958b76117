"""Debian's real nginx with ``auth_request`` in front of a small upstream, asking the gate.

The store, relay, Kafka and the eu worker are real (the ``pipeline`` fixture); the
revocation goes through ``tokensync token revoke --wait``; every answer is read
through nginx, as a client of a PHP, Go or Node service behind it would see it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from stack.process import free_port
from tests.conftest import IN_CI
from tests.gate_helpers import running_gate
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.e2e
USER = "App\\Models\\User"

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {root}/error.log info;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;

    upstream tokensync_gate {{
        server 127.0.0.1:{gate_port};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};

        location /orders/ {{
            auth_request /_tokensync/orders-read;
            auth_request_set $ts_type $upstream_http_x_tokensync_principal_type;
            auth_request_set $ts_id $upstream_http_x_tokensync_principal_id;
            auth_request_set $ts_token $upstream_http_x_tokensync_token_id;
            auth_request_set $ts_abilities $upstream_http_x_tokensync_abilities;
            proxy_set_header X-Tokensync-Principal-Type $ts_type;
            proxy_set_header X-Tokensync-Principal-Id $ts_id;
            proxy_set_header X-Tokensync-Token-Id $ts_token;
            proxy_set_header X-Tokensync-Abilities $ts_abilities;
            # nginx turns any auth answer but 2xx/401/403 into 500: the gate said 503
            # (region stale) or could not be reached; either way, unavailable
            error_page 500 = @tokensync_unavailable;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}

        location = /_tokensync/orders-read {{
            internal;
            proxy_pass http://tokensync_gate/auth?ability=orders:read;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Tokensync-Abilities "";
            proxy_set_header X-Tokensync-Mode "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}

        location @tokensync_unavailable {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 503 '{{"error":"temporarily_unavailable"}}';
        }}
    }}
}}
"""


class _Echo(BaseHTTPRequestHandler):
    """The upstream service: answers with the headers it received."""

    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _nginx(root: Path, port: int, gate_port: int, upstream_port: int) -> subprocess.Popen[bytes]:
    program = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(program).exists():
        message = "nginx is not installed (apt-get install nginx; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(root=root, port=port, gate_port=gate_port, upstream_port=upstream_port)
    )
    with (root / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [program, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(lambda: _answers(port) or proc.poll() is not None, 15, "nginx listening")
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise AssertionError(f"nginx exited: {(root / 'stderr.log').read_text()}")
    return proc


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
    except httpx.HTTPError:
        return False
    return True


def _revoke_with_wait(pipeline: Pipeline, token_id: int, tmp_path: Path) -> str:
    env = {
        **pipeline.env(),
        "TOKENSYNC_REGIONS": f"eu={pipeline.settings.region('eu').redis_url}",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared",
            "token",
            "revoke",
            str(token_id),
            "--wait",
            "--reason",
            "gate e2e",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    return done.stdout


def test_nginx_auth_request_admits_refuses_and_reports_a_stale_region_through_the_gate(
    tmp_path: Path, pipeline: Pipeline, upstream: int
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    reader = pipeline.store.issue(USER, 42, "php-service", ["orders:read"])
    writer_only = pipeline.store.issue(USER, 43, "other", ["orders:write"])
    pipeline.wait_applied(writer_only.seq)
    eu_env = {
        "TOKENSYNC_TOPIC_PREFIX": pipeline.topics.prefix,
        "TOKENSYNC_REDIS_NAMESPACE": pipeline.settings.redis_namespace,
    }
    port = free_port()
    with running_gate(
        tmp_path, pipeline.settings.region("eu").redis_url, staleness_budget=2, environ=eu_env
    ) as gate_url:
        gate_port = int(gate_url.rsplit(":", 1)[1])
        nginx = _nginx(tmp_path / "nginx", port, gate_port, upstream)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                auth = {"Authorization": f"Bearer {reader.plain_text_token}"}
                through = client.get("/orders/1", headers=auth)
                assert 200 == through.status_code, through.text
                seen = through.json()
                assert {
                    "x-tokensync-principal-type": USER,
                    "x-tokensync-principal-id": "42",
                    "x-tokensync-token-id": str(reader.id),
                    "x-tokensync-abilities": "orders:read",
                } == {k: v for k, v in seen.items() if k.startswith("x-tokensync-")}

                lacking = client.get(
                    "/orders/1", headers={"Authorization": f"Bearer {writer_only.plain_text_token}"}
                )
                assert 403 == lacking.status_code

                spoofed = client.get(
                    "/orders/1",
                    headers={
                        "Authorization": f"Bearer {writer_only.plain_text_token}",
                        "X-Tokensync-Abilities": "",
                        "X-Tokensync-Principal-Id": "1",
                    },
                )
                assert 403 == spoofed.status_code

                receipt = _revoke_with_wait(pipeline, reader.id, tmp_path)
                assert "enforced in 1/1 regions" in receipt
                revoked = client.get("/orders/1", headers=auth)
                assert 401 == revoked.status_code
                assert 'error="invalid_token"' in revoked.headers["www-authenticate"]

                pipeline.stop_worker("eu")  # heartbeats stop reaching the region
                deadline = time.monotonic() + 30
                while True:
                    stale = client.get(
                        "/orders/1",
                        headers={"Authorization": f"Bearer {writer_only.plain_text_token}"},
                    )
                    if stale.status_code == 503 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                assert (503, "1") == (stale.status_code, stale.headers.get("retry-after"))
        finally:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
