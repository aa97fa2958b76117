"""Running ``tokensync gate`` as a real process for a test, and raw HTTP to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from stack.process import free_port

CLIENT_ID = "laravel-app"
CLIENT_SECRET = "s3cret-of-the-laravel-app"


@contextmanager
def running_gate(
    tmp_path: Path,
    redis_url: str,
    *,
    staleness_budget: float = 5.0,
    workers: int = 1,
    extra_args: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A gate of region ``eu`` on ``redis_url``; yields its base URL; stops it by pid."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")} | {
        "TOKENSYNC_REGIONS": f"eu={redis_url}",
        "TOKENSYNC_STALENESS_BUDGET": str(staleness_budget),
        "TOKENSYNC_GATE_CLIENTS": f"{CLIENT_ID}:{CLIENT_SECRET}",
        "TOKENSYNC_USAGE_INTERVAL": "0.2",
        **(environ or {}),
    }
    log = tmp_path / f"gate-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "shared",
        "gate",
        "--region",
        "eu",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--json",
        *extra_args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gate did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_request(
    base_url: str, data: bytes, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is; the status, headers and body of the first response."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body
