"""Running the gate: one listening socket, N worker processes, each an event loop.

The parent binds the socket, makes the shared metrics, forks the workers (each builds
its own validator, near-cache and usage recorder after the fork: no threads or
connections cross it), restarts a worker that dies, and stops them all on SIGTERM or
SIGINT. With one worker everything runs in the calling process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

import structlog

from gate.app import Gate
from gate.http import GateProtocol
from gate.metrics import GateMetrics
from shared.settings import Settings
from shared.validator import AsyncValidator, Policy

__all__ = ["GateOptions", "bind", "run"]

log = structlog.get_logger("gate")


@dataclass(frozen=True)
class GateOptions:
    """What ``tokensync gate`` was asked for."""

    region: str
    host: str = "127.0.0.1"
    port: int = 8181
    workers: int = 1
    near_cache: bool = True
    usage: bool = True
    on_unavailable: str = "deny"
    cookie_name: str = "tokensync_token"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _validator(settings: Settings, options: GateOptions) -> AsyncValidator:
    policy = Policy.from_settings(settings, on_unavailable=options.on_unavailable)
    fallback = None
    if options.on_unavailable == "fallback":
        from gate.fallback import load_fallback

        fallback = load_fallback(settings)
    validator = AsyncValidator.from_settings(
        settings, options.region, policy=policy, fallback=fallback
    )
    if options.near_cache:
        validator.enable_near_cache()
    if options.usage:
        validator.enable_usage(settings.usage_interval_s)
    return validator


async def _serve(
    sock: socket.socket, settings: Settings, options: GateOptions, metrics: GateMetrics
) -> None:
    loop = asyncio.get_running_loop()
    validator = _validator(settings, options)
    gate = Gate(
        options.region,
        validator,
        metrics,
        clients=settings.gate_clients,
        cookie_name=options.cookie_name,
        expiration_minutes=settings.token_expiration_minutes,
    )
    server = await loop.create_server(
        lambda: GateProtocol(gate.handle, metrics), sock=sock, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await validator.close()


def _worker(
    sock: socket.socket, settings: Settings, options: GateOptions, metrics: GateMetrics
) -> None:
    loop = _event_loop()
    try:
        loop.run_until_complete(_serve(sock, settings, options, metrics))
    finally:
        loop.close()


def run(settings: Settings, options: GateOptions, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    settings.region(options.region)  # a ConfigError before binding anything
    listener = sock or bind(options.host, options.port)
    host, port = listener.getsockname()[:2]
    workers = max(1, options.workers)
    metrics = GateMetrics(workers=workers)
    log.info(
        "gate_started",
        region=options.region,
        address=f"{host}:{port}",
        workers=workers,
        policy=options.on_unavailable,
        near_cache=options.near_cache,
        introspection_clients=len(settings.gate_clients),
    )
    if not settings.gate_clients:
        log.warning("gate_introspection_disabled", hint="set TOKENSYNC_GATE_CLIENTS=id:secret")
    if workers == 1:
        _worker(listener, settings, options, metrics)
        return
    _supervise(listener, settings, options, metrics)


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel send SIGTERM to this worker when the supervisor dies
    (even by SIGKILL), so no orphan keeps the port."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def _spawn(
    index: int, sock: socket.socket, settings: Settings, options: GateOptions, metrics: GateMetrics
) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent(parent)
            metrics.worker = index
            _worker(sock, settings, options, metrics)
        except Exception:
            log.exception("gate_worker_failed", worker=index)
            code = 1
        finally:
            os._exit(code)
    return pid


def _supervise(
    sock: socket.socket, settings: Settings, options: GateOptions, metrics: GateMetrics
) -> None:
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = {_spawn(i, sock, settings, options, metrics): i for i in range(options.workers)}
    restarts: list[float] = []
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.2)
            continue
        index = children.pop(pid, None)
        if index is None or stopping:
            continue
        log.warning("gate_worker_exited", worker=index, status=status)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 10] + [now]
        if len(restarts) > 5 * options.workers:
            log.error("gate_workers_keep_dying", hint="see the lines above")
            stopping = True
            break
        children[_spawn(index, sock, settings, options, metrics)] = index
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
        else:
            children.pop(pid, None)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log.info("gate_stopped", region=options.region)
