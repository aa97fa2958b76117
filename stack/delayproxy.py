"""A TCP proxy that delays every byte by a fixed one-way time in each direction.

The kernel here has no ``netem``, so emulated distance lives in user space: each
chunk read from one side is written to the other side ``delay_s`` later, in
order, without limiting throughput (chunks in flight overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

__all__ = ["DelayProxy", "parse_delays", "run_proxy"]


def parse_delays(text: str) -> dict[str, float]:
    """``us=40ms,ap=90ms`` (or ``us=40``, milliseconds) -> {region: seconds}."""
    from shared.errors import UsageError

    delays: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        value = value.strip().removesuffix("ms")
        if not sep or not name.strip() or not value.replace(".", "", 1).isdigit():
            raise UsageError(f"link delay {item!r} must look like REGION=40ms")
        delays[name.strip()] = float(value) / 1000
    return delays


@dataclass
class DelayProxy:
    """Listen on ``listen_port``; forward to ``target``; delay each direction by ``delay_s``."""

    listen_port: int
    target_host: str
    target_port: int
    delay_s: float

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay_s, data))
                if not data:
                    break
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            self._pump(client_r, server_w), self._pump(server_r, client_w), return_exceptions=True
        )

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()


def run_proxy(listen_port: int, target: str, delay_s: float) -> None:
    """Run a proxy in this process until SIGTERM/SIGINT."""
    import signal

    host, _, port = target.rpartition(":")
    proxy = DelayProxy(listen_port, host or "127.0.0.1", int(port), delay_s)

    async def main() -> None:
        task = asyncio.create_task(proxy.serve())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
