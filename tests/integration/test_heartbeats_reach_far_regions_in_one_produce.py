"""A far region's fetch stays parked at the broker: every heartbeat round of the relay (one
record per partition) reaches the broker in one produce request, so it completes a parked
fetch once, not once per partition or per chunk (each completion leaves the far worker
without a fetch at the broker for a round trip, and a revocation arriving then waits for
it). Measured through a delaying proxy in front of a broker listener of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.relay import Relay
from producer.store import TokenStore
from producer.wakeup import waker_for
from shared.events import Heartbeat
from shared.keys import Topics
from stack import KafkaBroker, KafkaJars, default_cache_dir, free_port
from stack.process import stop_pid
from tests.kafka_helpers import KEYRING, kafka_connector, read_topic

pytestmark = pytest.mark.integration

DELAY_S = 0.040
PARTITIONS = 12
PRODUCE = 0  # Kafka API key of a ProduceRequest


class CountingProxy:
    """A TCP proxy delaying each direction by ``delay_s`` that counts the Kafka requests
    (by API key) its clients send."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.delay_s = delay_s
        self.requests: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def count(self, api_key: int) -> int:
        with self._lock:
            return self.requests[api_key]

    def _frames(self, buffer: bytearray) -> None:
        while len(buffer) >= 6:
            (size,) = struct.unpack(">i", buffer[:4])
            if len(buffer) < 4 + size:
                return
            (api_key,) = struct.unpack(">h", buffer[4:6])
            with self._lock:
                self.requests[api_key] += 1
            del buffer[: 4 + size]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                if count:
                    buffer += data
                    self._frames(buffer)
                await asyncio.sleep(self.delay_s)  # in order: one chunk at a time is enough
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pump(client_r, server_w, count=True),
            self._pump(server_r, client_w, count=False),
            return_exceptions=True,
        )

    def __enter__(self) -> CountingProxy:
        self._thread.start()

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture(scope="module")
def far_broker() -> Iterator[tuple[str, CountingProxy]]:
    """A broker of this module's own with a listener advertised as a counting proxy 40 ms
    away; yields (the broker's local bootstrap, the proxy)."""
    root = Path(tempfile.mkdtemp(prefix="tokensync-far-broker-"))
    bind = free_port()
    with CountingProxy(bind, DELAY_S) as proxy:
        broker = KafkaBroker(
            KafkaJars(default_cache_dir()),
            root / "kafka",
            free_port(),
            free_port(),
            "384m",
            (("FAR", bind, proxy.port),),
        )
        record = broker.start()
        try:
            broker.wait_ready(record)
            yield broker.bootstrap, proxy
        finally:
            stop_pid(record.pid, record.argv[0])
            shutil.rmtree(root, ignore_errors=True)


def test_each_heartbeat_round_of_a_relay_40_ms_away_is_one_produce_request(
    store: TokenStore, far_broker: tuple[str, CountingProxy], topics: Topics
) -> None:
    local, proxy = far_broker
    far = f"127.0.0.1:{proxy.port}"
    waker = waker_for(store.engine)
    relay = Relay(store.engine, kafka_connector(far, topics, PARTITIONS), KEYRING, waker)
    rounds = 20
    try:
        relay.heartbeat()  # connects, creates the topic, learns its partitions
        before = proxy.count(PRODUCE)
        for _ in range(rounds):
            relay.heartbeat()
            time.sleep(0.01)
        produced = proxy.count(PRODUCE) - before
    finally:
        relay.close()
        waker.close()
    beats = [r.event() for r in read_topic(local, topics.tokens, expect=(rounds + 1) * PARTITIONS)]
    per_partition = Counter(b.partition for b in beats if isinstance(b, Heartbeat))
    assert dict.fromkeys(range(PARTITIONS), rounds + 1) == dict(per_partition)
    assert rounds == produced
