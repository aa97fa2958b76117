"""The fence around faust's and aiokafka's internals, checked against their REAL classes.

No hand-made fake of a private: the checks run on the installed faust-streaming and
aiokafka, and on subclasses of their real classes altered the way a release could alter them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.sensors.monitor import Monitor
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from shared.errors import DependencyError
from workers import internals
from workers.internals import check_internals

FAUST = version("faust-streaming")
AIOKAFKA = version("aiokafka")


def test_the_installed_faust_and_aiokafka_have_every_internal_the_worker_relies_on() -> None:
    check_internals()


def test_the_installed_versions_are_the_pinned_ones() -> None:
    assert internals.TESTED == {"faust-streaming": FAUST, "aiokafka": AIOKAFKA}
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"faust-streaming=={FAUST}"' in pyproject
    assert f'"aiokafka=={AIOKAFKA}"' in pyproject


def _refusal(replacements: Mapping[str, Any]) -> str:
    with pytest.raises(DependencyError) as refused:
        check_internals(replacements)
    message = str(refused.value)
    assert f"faust-streaming {FAUST}" in message and f"aiokafka {AIOKAFKA}" in message
    assert "\n" not in message
    return message


def test_a_consumer_whose_wait_next_records_takes_other_parameters_is_refused() -> None:
    class Altered(AIOKafkaConsumer):
        async def _wait_next_records(self, timeout: float, *, budget: int) -> Any:  # type: ignore[override]
            return None

    message = _refusal({"faust.transport.drivers.aiokafka:Consumer": Altered})
    assert "Consumer._wait_next_records" in message and "(timeout)" in message


def test_a_consumer_whose_commit_is_no_longer_a_coroutine_is_refused() -> None:
    class Altered(AIOKafkaConsumer):
        def _commit(self, offsets: Mapping[Any, int]) -> bool:  # type: ignore[override]
            return True

    assert "Consumer._commit" in _refusal({"faust.transport.drivers.aiokafka:Consumer": Altered})


def test_a_consumer_whose_drain_is_renamed_is_refused() -> None:
    class Altered(AIOKafkaConsumer):
        _drain_messages = None  # type: ignore[assignment]

    message = _refusal({"faust.transport.drivers.aiokafka:Consumer": Altered})
    assert "Consumer._drain_messages" in message and "missing" in message


def test_a_fetcher_that_no_longer_calls_the_consumers_drain_is_refused() -> None:
    from faust.transport.consumer import Fetcher

    class Altered(Fetcher):
        async def _fetcher(self) -> None:  # type: ignore[override]
            await self.app.consumer.drain_all(self)  # type: ignore[attr-defined]

    message = _refusal({"faust.transport.consumer:Fetcher": Altered})
    assert "Fetcher._fetcher" in message and "_drain_messages" in message


def test_a_monitor_without_stream_inbound_time_is_refused() -> None:
    assert hasattr(Monitor, "stream_inbound_time")  # the real one has it
    stripped = type("Monitor", (), {})  # a release that dropped the attribute
    assert "Monitor.stream_inbound_time" in _refusal({"faust.sensors.monitor:Monitor": stripped})


def test_an_aiokafka_whose_request_build_changed_is_refused() -> None:
    from aiokafka.protocol.api import Request

    class Altered(Request[Any]):  # type: ignore[misc]
        API_KEY = 3

        def build(self, struct_class: Any, version: int) -> Any:
            return None

    assert "Request.build" in _refusal({"aiokafka.protocol.api:Request": Altered})


def test_the_batch_drain_is_installed_on_the_real_consumer_of_a_faust_app() -> None:
    """faust's own consumer class, on a real App: the drain replaces its private loop and
    reads its real ``_stopped`` events."""
    ran: list[bool] = []

    async def go() -> None:
        app = faust.App("fence-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        consumer = app.consumer
        assert type(consumer) is AIOKafkaConsumer
        fetches = internals.FaustFetches(app, "t.tokens.v1")

        async def drain(source: internals.FaustFetches) -> None:
            ran.append(source.stopped())

        fetches.install_drain(drain)
        await consumer._drain_messages(app._fetcher)  # how faust's Fetcher calls it
        app._fetcher._stopped.set()
        await consumer._drain_messages(app._fetcher)
        consumer._thread.thread_loop.close()  # the consumer thread's loop, never started

    asyncio.run(go())
    assert ran == [False, True]


def test_the_worker_command_refuses_an_incompatible_faust_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from shared.cli import main

    class Altered(AIOKafkaConsumer):
        async def _commit(self, offsets: Mapping[Any, int], *, force: bool) -> bool:  # type: ignore[override]
            return True

    real = internals._resolve
    monkeypatch.setattr(
        internals,
        "_resolve",
        lambda path: Altered if path == "faust.transport.drivers.aiokafka:Consumer" else real(path),
    )
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--region", "eu", "--redis", "redis://127.0.0.1:1/0"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokensync: error: ")
    assert "Consumer._commit" in lines[0] and f"faust-streaming {FAUST}" in lines[0]
    assert "Traceback" not in captured.out + captured.err
