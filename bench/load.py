"""The load generators of the gate benchmark: keep-alive HTTP connections that send
pre-built requests and time each from write to the last byte of its answer, and N concurrent
asyncio tasks calling a coroutine the same way; both on uvloop where it is installed."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["http_load", "run_async", "task_load"]


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``factory()`` to completion on a fresh (uv)loop."""
    loop = _event_loop()
    try:
        return loop.run_until_complete(factory())
    finally:
        loop.close()


class _KeepAlive(asyncio.Protocol):
    """One keep-alive connection that sends the next request as soon as an answer is
    complete (callbacks only: the client should cost far less than the server)."""

    def __init__(
        self, requests: Sequence[bytes], seed: int, end: float, done: asyncio.Future[None]
    ) -> None:
        self.requests = requests
        self.rng = random.Random(seed)
        self.end = end
        self.done = done
        self.samples: list[float] = []
        self.errors = 0
        self.warm = 20
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.requests[self.rng.randrange(len(self.requests))])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        at = head.lower().find(b"content-length:")
        length = 0
        if at >= 0:
            line_end = head.find(b"\r\n", at)
            length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
        if len(self.buffer) < head_end + 4 + length:
            return
        now = time.perf_counter()
        self.buffer = self.buffer[head_end + 4 + length :]
        if self.warm:
            self.warm -= 1
        else:
            self.samples.append((now - self.sent_at) * 1000)
            if head[9:12] != b"200":
                self.errors += 1
        if now < self.end:
            self._send()
        elif not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))


async def _http_load(
    port: int, requests: Sequence[bytes], connections: int, seconds: float
) -> tuple[list[float], float, int]:
    """Latencies (ms), wall seconds, and answers that were not 200."""
    loop = asyncio.get_running_loop()
    end = time.perf_counter() + seconds
    began = time.perf_counter()
    clients: list[_KeepAlive] = []
    for seed in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        _, client = await loop.create_connection(
            functools.partial(_KeepAlive, requests, seed, end, done), "127.0.0.1", port
        )
        clients.append(client)
    await asyncio.gather(*(c.done for c in clients))
    wall = time.perf_counter() - began
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    samples = [x for c in clients for x in c.samples]
    return samples, wall, sum(c.errors for c in clients)


def http_load(
    port: int, requests: Sequence[bytes], connections: int, seconds: float
) -> Awaitable[tuple[list[float], float, int]]:
    """Latencies (ms), wall seconds, and answers that were not 200, over ``connections``."""
    return _http_load(port, requests, connections, seconds)


async def task_load(
    call: Callable[[random.Random], Awaitable[bool]], concurrency: int, seconds: float
) -> tuple[list[float], float, int]:
    """Latencies (ms), wall seconds and failed calls of ``concurrency`` tasks (after 20
    warm-up calls each)."""
    samples: list[float] = []
    errors = 0

    async def warm(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            await call(rng)

    async def one_task(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < end:
            t = time.perf_counter()
            ok = await call(rng)
            samples.append((time.perf_counter() - t) * 1000)
            errors += not ok

    await asyncio.gather(*(warm(i) for i in range(concurrency)))
    end = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(one_task(i) for i in range(concurrency)))
    return samples, time.perf_counter() - began, errors
