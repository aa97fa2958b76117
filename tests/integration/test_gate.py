"""The regional gate over real HTTP, as a real process, against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from producer.store import TokenStore
from shared.events import TokenOp
from shared.tokenformat import checksum
from tests.gate_helpers import CLIENT_ID, CLIENT_SECRET, raw_request, running_gate
from tests.region_helpers import USER, RegionFixture, now_ms

pytestmark = pytest.mark.integration

READER = f"{'r' * 40}{checksum('r' * 40)}"
WRITER = f"{'w' * 40}{checksum('w' * 40)}"
UNKNOWN = f"{'u' * 40}{checksum('u' * 40)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def region(redis_url: str) -> RegionFixture:
    fixture = RegionFixture(redis_url)
    fixture.beat()
    fixture.token(READER, token_id=1, owner="7", abilities=("orders:read",))
    fixture.token(WRITER, token_id=2, owner="8", abilities=("orders:read", "orders:write"))
    return fixture


@pytest.fixture
def gate(tmp_path: Path, redis_url: str, region: RegionFixture) -> Iterator[httpx.Client]:
    with running_gate(tmp_path, redis_url) as url, httpx.Client(base_url=url) as client:
        yield client


def test_a_valid_bearer_token_gets_200_with_the_principal_headers(gate: httpx.Client) -> None:
    response = gate.get("/auth", headers=bearer(f"2|{WRITER}"))
    assert 200 == response.status_code
    assert {
        "x-tokensync-principal-type": USER,
        "x-tokensync-principal-id": "8",
        "x-tokensync-token-id": "2",
        "x-tokensync-abilities": "orders:read,orders:write",
    } == {k: v for k, v in response.headers.items() if k.startswith("x-tokensync-")}
    # any path under /auth (Envoy's path prefix) is the same question
    assert 200 == gate.post("/auth/orders/17?x=1", headers=bearer(WRITER)).status_code


def test_missing_unknown_and_revoked_tokens_get_401_with_rfc_6750_challenges(
    gate: httpx.Client, region: RegionFixture
) -> None:
    missing = gate.get("/auth")
    assert (401, 'Bearer realm="tokensync"') == (
        missing.status_code,
        missing.headers["www-authenticate"],
    )
    assert "unauthenticated" == missing.json()["error"]
    unknown = gate.get("/auth", headers=bearer(UNKNOWN))
    assert 401 == unknown.status_code
    assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
    assert "invalid_token" == unknown.json()["error"]
    assert 401 == gate.get("/auth", headers=bearer("not-a-token")).status_code
    assert 200 == gate.get("/auth", headers=bearer(READER)).status_code  # near-cached now
    region.token(READER, token_id=1, owner="7", op=TokenOp.REVOKED)
    deadline = time.monotonic() + 5
    while gate.get("/auth", headers=bearer(READER)).status_code != 401:
        assert time.monotonic() < deadline, "the revocation never reached the gate"
        time.sleep(0.02)


def test_a_token_lacking_an_ability_gets_403_insufficient_scope(gate: httpx.Client) -> None:
    denied = gate.get("/auth?ability=orders:read&ability=orders:write", headers=bearer(READER))
    assert 403 == denied.status_code
    assert (
        'Bearer realm="tokensync", error="insufficient_scope", scope="orders:write"'
        == denied.headers["www-authenticate"]
    )
    assert ["orders:write"] == denied.json()["missing"]
    assert (
        200
        == gate.get(
            "/auth?ability=orders:read&ability=orders:write&mode=any", headers=bearer(READER)
        ).status_code
    )
    by_header = {**bearer(READER), "X-Tokensync-Abilities": "orders:write"}
    assert 403 == gate.get("/auth/any/path", headers=by_header).status_code
    assert (
        200
        == gate.get(
            "/auth",
            headers={
                **by_header,
                "X-Tokensync-Mode": "any",
                "X-Tokensync-Abilities": "orders:read orders:write",
            },
        ).status_code
    )
    # the query the proxy was configured with wins over a header the client sent
    spoofed = {**bearer(READER), "X-Tokensync-Abilities": "", "X-Tokensync-Mode": "any"}
    assert 403 == gate.get("/auth?ability=orders:write", headers=spoofed).status_code


def test_a_stale_region_gets_503_with_retry_after_and_healthz_says_so(
    tmp_path: Path, redis_url: str, region: RegionFixture
) -> None:
    with (
        running_gate(tmp_path, redis_url, staleness_budget=0.5) as url,
        httpx.Client(base_url=url) as gate,
    ):
        region.beat()
        assert 200 == gate.get("/healthz").status_code
        time.sleep(1.7)  # past the budget and the 1 s clock-skew allowance
        stale = gate.get("/auth", headers=bearer(WRITER))
        assert (503, "1") == (stale.status_code, stale.headers["retry-after"])
        assert "stale" == stale.json()["reason"]
        assert 'error="temporarily_unavailable"' in stale.headers["www-authenticate"]
        health = gate.get("/healthz")
        assert (503, False, "stale") == (
            health.status_code,
            health.json()["ready"],
            health.json()["reason"],
        )


def test_a_cookie_token_needs_the_csrf_header_when_the_forwarded_method_is_unsafe(
    gate: httpx.Client,
) -> None:
    cookies = f"tokensync_token={WRITER}; XSRF-TOKEN=the-csrf-value"
    assert 200 == gate.get("/auth", headers={"Cookie": cookies}).status_code
    for forwarded in ({"X-Forwarded-Method": "POST"}, {"X-Original-Method": "DELETE"}):
        refused = gate.get("/auth", headers={"Cookie": cookies, **forwarded})
        assert (403, "csrf_mismatch") == (refused.status_code, refused.json()["error"])
        wrong = {"Cookie": cookies, "X-XSRF-TOKEN": "other", **forwarded}
        assert 403 == gate.get("/auth", headers=wrong).status_code
        right = {"Cookie": cookies, "X-XSRF-TOKEN": "the-csrf-value", **forwarded}
        assert 200 == gate.get("/auth", headers=right).status_code
    # a spoofed safe method header cannot hide an unsafe real one
    spoofed = {"Cookie": cookies, "X-Original-Method": "GET"}
    assert 403 == gate.post("/auth", headers=spoofed).status_code


def test_introspection_requires_client_authentication_and_answers_rfc_7662(
    gate: httpx.Client,
) -> None:
    form = {"token": f"2|{WRITER}", "token_type_hint": "access_token"}
    anonymous = gate.post("/introspect", data=form)
    assert (401, "invalid_client") == (anonymous.status_code, anonymous.json()["error"])
    assert anonymous.headers["www-authenticate"].startswith("Basic ")
    wrong = gate.post("/introspect", data=form, auth=(CLIENT_ID, "wrong-secret-xxxxxxxx"))
    assert 401 == wrong.status_code
    assert 401 == gate.post("/introspect", data=form, auth=("nobody", CLIENT_SECRET)).status_code
    active = gate.post("/introspect", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    body = active.json()
    assert 200 == active.status_code and "no-store" == active.headers["cache-control"]
    assert {
        "active": True,
        "scope": "orders:read orders:write",
        "sub": f"{USER}:8",
        "token_type": "Bearer",
        "client_id": CLIENT_ID,
    } == {k: body[k] for k in ("active", "scope", "sub", "token_type", "client_id")}
    assert abs(body["iat"] - (now_ms() // 1000)) < 60
    assert ("eu", 2) == (body["tokensync"]["region"], body["tokensync"]["token_id"])
    assert body["tokensync"]["freshness_s"] is not None
    for token in (UNKNOWN, "garbage", f"9|{WRITER}"):
        inactive = gate.post("/introspect", data={"token": token}, auth=(CLIENT_ID, CLIENT_SECRET))
        assert (200, {"active": False}) == (inactive.status_code, inactive.json())
    assert 405 == gate.get("/introspect", auth=(CLIENT_ID, CLIENT_SECRET)).status_code
    no_token = gate.post("/introspect", data={"other": "x"}, auth=(CLIENT_ID, CLIENT_SECRET))
    assert (400, "invalid_request") == (no_token.status_code, no_token.json()["error"])


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /auth?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tökén\r\n\r\n".encode(), 401),
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01abc\r\n\r\n", 400),
        (b"GET /auth?ability=%00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n", 400),
        (b"GET /auth?mode=some HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n", 400),
        (b"GET /auth?ability=a%22b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n", 400),
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
        (
            b"POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n" + b"t" * 40000,
            413,
        ),
        (b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ],
    ids=[
        "oversized-header",
        "oversized-url",
        "non-ascii-token",
        "control-character",
        "bad-ability",
        "bad-mode",
        "quote-in-ability",
        "not-http",
        "bad-content-length",
        "oversized-body",
        "unknown-path",
    ],
)
def test_bad_input_gets_a_4xx_with_a_json_body_never_a_500(
    gate: httpx.Client, request_bytes: bytes, status: int
) -> None:
    actual, headers, body = raw_request(str(gate.base_url).rstrip("/"), request_bytes)
    assert status == actual
    assert headers["content-type"] == "application/json"
    assert "error" in json.loads(body)
    assert 200 == gate.get("/healthz").status_code  # the gate still serves


def test_metrics_count_requests_by_outcome_across_worker_processes(
    tmp_path: Path, redis_url: str, region: RegionFixture
) -> None:
    with running_gate(tmp_path, redis_url, workers=2) as url:
        for _ in range(20):  # new connections: both workers get some
            with httpx.Client(base_url=url) as client:
                assert 200 == client.get("/auth", headers=bearer(WRITER)).status_code
                assert 401 == client.get("/auth", headers=bearer(UNKNOWN)).status_code
        text = httpx.get(f"{url}/metrics").text
    assert 'tokensync_gate_requests_total{region="eu",route="auth",outcome="valid"} 20' in text
    assert 'tokensync_gate_requests_total{region="eu",route="auth",outcome="invalid"} 20' in text
    assert 'tokensync_gate_request_seconds_count{region="eu",route="auth"} 40' in text


def test_the_gate_never_logs_a_token(tmp_path: Path, redis_url: str, region: RegionFixture) -> None:
    with running_gate(tmp_path, redis_url) as url, httpx.Client(base_url=url) as gate:
        gate.get("/auth", headers=bearer(UNKNOWN))
        gate.get("/auth?ability=orders:write", headers=bearer(READER))
        gate.post("/introspect", data={"token": WRITER}, auth=(CLIENT_ID, CLIENT_SECRET))
    logs = "".join(p.read_text() for p in tmp_path.glob("gate-*.log"))
    assert "gate_refused" in logs
    for secret in (READER, WRITER, UNKNOWN, READER[:40], CLIENT_SECRET):
        assert secret not in logs


def test_under_the_fallback_policy_an_unavailable_region_lets_the_token_store_answer(
    tmp_path: Path, redis_url: str, store: TokenStore, database_url: str
) -> None:
    issued = store.issue(USER, 3, "fallback", ["orders:read"])
    plain = issued.plain_text_token
    # the region's Redis is empty: never ready, so every answer must come from the store
    with (
        running_gate(
            tmp_path,
            redis_url,
            extra_args=("--on-unavailable", "fallback"),
            environ={"TOKENSYNC_DATABASE_URL": database_url},
        ) as url,
        httpx.Client(base_url=url) as gate,
    ):
        valid = gate.get("/auth?ability=orders:read", headers=bearer(plain))
        assert (200, "3") == (valid.status_code, valid.headers["x-tokensync-principal-id"])
        assert 403 == gate.get("/auth?ability=orders:write", headers=bearer(plain)).status_code
        assert 503 == gate.get("/healthz").status_code  # health tells the truth regardless
        store.revoke_token(issued.id)
        assert 401 == gate.get("/auth", headers=bearer(plain)).status_code


def test_a_wrong_gate_command_prints_one_line_and_exits_non_zero(
    tmp_path: Path, redis_url: str
) -> None:
    import os
    import socket
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_REGIONS"] = f"eu={redis_url}"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for args, message in (
            (["--region", "mars"], "unknown region 'mars'"),
            (["--region", "eu", "--port", str(busy.getsockname()[1])], "cannot listen on"),
            (["--region", "eu", "--workers", "0"], "--workers"),
        ):
            done = subprocess.run(
                [sys.executable, "-m", "shared", "gate", *args],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode != 0
            assert message in done.stderr
            assert "Traceback" not in done.stderr
            assert 1 == len(done.stderr.strip().splitlines()), done.stderr
    finally:
        busy.close()


def test_a_client_that_expects_100_continue_gets_it_before_sending_the_form(
    gate: httpx.Client,
) -> None:
    import base64
    import socket

    host, port = str(gate.base_url).removeprefix("http://").rstrip("/").split(":")
    credentials = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    body = f"token={WRITER}".encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /introspect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = b""
        while b'"active"' not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b'"active":true' in answer


def test_pipelined_requests_are_answered_in_order(gate: httpx.Client) -> None:
    import socket

    host, port = str(gate.base_url).removeprefix("http://").rstrip("/").split(":")
    tokens = [WRITER if i % 3 else UNKNOWN for i in range(100)]
    burst = b"".join(
        f"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\r\n".encode()
        for t in tokens
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(burst)
        received = b""
        while received.count(b"HTTP/1.1 ") < len(tokens):
            chunk = sock.recv(65536)
            assert chunk, "the gate closed the connection"
            received += chunk
    statuses = [int(part[:3]) for part in received.split(b"HTTP/1.1 ")[1:]]
    assert [200 if t == WRITER else 401 for t in tokens] == statuses


def test_worker_processes_exit_when_their_supervisor_is_killed(
    tmp_path: Path, redis_url: str, region: RegionFixture
) -> None:
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    from stack.process import free_port, pid_alive

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_REGIONS"] = f"eu={redis_url}"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared",
            "gate",
            "--region",
            "eu",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def children() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor.pid:
                    found.append(int(entry.name))
        return found

    def serving() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(children()) < 2 or not serving():
            assert time.monotonic() < deadline, "the gate's workers did not start"
            time.sleep(0.1)
        workers = children()
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(pid_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "orphaned gate workers kept running"
            time.sleep(0.1)
    finally:
        for pid in [supervisor.pid, *workers]:  # only what this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        supervisor.wait(timeout=10)
