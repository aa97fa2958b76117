"""The delaying TCP proxy adds its one-way delay in each direction and keeps every byte in order."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from stack.delayproxy import DelayProxy, parse_delays
from stack.process import free_port


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_a_round_trip_through_the_proxy_takes_two_delays_and_loses_nothing() -> None:
    async def run() -> tuple[float, bytes, bytes]:
        echo_port, proxy_port = free_port(), free_port()
        server = await asyncio.start_server(_echo, "127.0.0.1", echo_port)
        ready = asyncio.Event()
        proxy = asyncio.create_task(
            DelayProxy(proxy_port, "127.0.0.1", echo_port, 0.05).serve(ready)
        )
        await ready.wait()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        began = time.monotonic()
        writer.write(b"ping")
        await writer.drain()
        first = await reader.readexactly(4)
        elapsed = time.monotonic() - began
        payload = bytes(range(256)) * 4096  # 1 MiB, several chunks in flight
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.3)  # the proxy's pumps see the EOF after their delay and close
        proxy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await proxy
        server.close()
        await server.wait_closed()
        return elapsed, first + echoed, b"ping" + payload

    elapsed, got, sent = asyncio.run(run())
    assert 0.1 <= elapsed < 0.8  # lower bound: the delay applies; upper: no stray extra delays
    assert sent == got


def test_link_delays_parse_like_people_write_them() -> None:
    assert {"us": 0.04, "ap": 0.09} == parse_delays("us=40ms, ap=90")
    from shared.errors import UsageError

    with pytest.raises(UsageError):
        parse_delays("us=fast")
