"""Every use of faust-streaming's and aiokafka's internals, in one place, checked at start-up.

The worker keeps faust for group membership, rebalances, timers and producing, but needs
what faust's public API does not offer:

- it replaces the consumer's record-at-a-time loop (``Consumer._drain_messages``, which
  faust's ``Fetcher`` service calls) with the batch drain (``workers.drain``), which reads
  whole fetches (``Consumer._wait_next_records``), stops with the consumer and the fetcher
  (their ``_stopped`` events and ``should_stop``), commits what Redis applied
  (``Consumer._commit``) and keeps faust's stall detector fed
  (``Monitor.stream_inbound_time``);
- it redirects the seek faust makes after each rebalance (``Consumer.seek_to_committed``,
  called by ``perform_seek``) to the offsets the region's Redis recorded;
- it reads a topic's id with a Metadata version 12 request built from aiokafka's protocol
  types (aiokafka 0.14's own ``MetadataRequest`` stops at version 5).

Nothing else in the worker package touches these. ``check_internals`` verifies, before
the worker joins its group, that each one exists with the signature this module was
written against (``inspect.signature``) and that faust still calls the two methods the
worker replaces; otherwise it raises ``DependencyError`` naming the installed versions
and the ones tested (``TESTED``, the exact pins in pyproject.toml).

It is over 350 lines on purpose: one module is the fence, so that a faust or aiokafka
upgrade is reviewed here and nowhere else (the Metadata v12 schema alone is 100 lines).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO
from typing import Any

from faust.types import TP

from shared.errors import DependencyError
from shared.kafka_client import KafkaClientConfig, auth_failures
from shared.logs import get_logger
from workers.handlers import Record

__all__ = [
    "TESTED",
    "FaustFetches",
    "check_internals",
    "commit",
    "read_cluster_and_topic_id",
    "redirect_seek",
    "seek_wait",
]

log = get_logger(__name__)

# The exact versions this module was written and tested against (pinned in pyproject.toml).
TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

_CONSUMER = "faust.transport.drivers.aiokafka:Consumer"
_FETCHER = "faust.transport.consumer:Fetcher"
_MONITOR = "faust.sensors.monitor:Monitor"
_CLIENT = "aiokafka.client:AIOKafkaClient"
_REQUEST = "aiokafka.protocol.api:Request"


@dataclass(frozen=True)
class _Need:
    """One internal: ``owner`` (``module:Class``) has ``attribute``; a method takes exactly
    ``params`` (after ``self``; None: an attribute, not a method), a coroutine if ``is_async``."""

    owner: str
    attribute: str
    params: tuple[str, ...] | None = None
    is_async: bool = False


_NEEDS = (
    _Need(_CONSUMER, "_drain_messages", ("fetcher",), is_async=True),
    _Need(_CONSUMER, "_wait_next_records", ("timeout",), is_async=True),
    _Need(_CONSUMER, "_commit", ("offsets",), is_async=True),
    _Need(_CONSUMER, "seek_to_committed", (), is_async=True),
    _Need(_CONSUMER, "perform_seek", (), is_async=True),
    _Need(_CONSUMER, "seek_wait", ("partitions",), is_async=True),
    _Need(_FETCHER, "_fetcher", ()),  # a Service.task: wrapped, not a coroutine function
    _Need(_MONITOR, "stream_inbound_time"),
    _Need(_CLIENT, "bootstrap", (), is_async=True),
    _Need(_CLIENT, "get_random_node", ()),
    _Need(_CLIENT, "send", ("node_id", "request", "group"), is_async=True),
    _Need(_REQUEST, "build", ("request_struct_class",)),
)

# faust must still call what the worker replaces: (owner, method, text its source holds)
_CALLS = (
    (_FETCHER, "_fetcher", "._drain_messages(self)"),
    (_CONSUMER, "perform_seek", "self.seek_to_committed()"),
)


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _versions() -> str:
    found = []
    for name, tested in TESTED.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "(not installed)"
        found.append(f"{name} {installed} (tested: {tested})")
    return ", ".join(found)


def _problem(owner: Any, need: _Need) -> str | None:
    name = f"{need.owner.rpartition(':')[2]}.{need.attribute}"
    missing = object()
    value = inspect.getattr_static(owner, need.attribute, missing)
    if value is missing or (value is None and need.params is not None):
        return f"{name} is missing"
    if need.params is None:
        return None
    function = getattr(owner, need.attribute)
    if not callable(function):
        return f"{name} is missing (not a method)"
    params = tuple(inspect.signature(function).parameters)[1:]  # after self
    if params != need.params:
        return f"{name} takes ({', '.join(params)}), not ({', '.join(need.params)})"
    if need.is_async and not inspect.iscoroutinefunction(function):
        return f"{name} is no longer a coroutine function"
    return None


def check_internals(replacements: Mapping[str, Any] | None = None) -> None:
    """Raise DependencyError unless every internal the worker relies on is as expected;
    ``replacements`` (``module:Class`` -> class) checks other classes instead (tests)."""
    swap = dict(replacements or {})
    problems: list[str] = []

    def owner_of(path: str) -> Any:
        return swap[path] if path in swap else _resolve(path)

    for need in _NEEDS:
        try:
            problem = _problem(owner_of(need.owner), need)
        except (ImportError, AttributeError, TypeError, ValueError) as e:
            problem = f"{need.owner}.{need.attribute} cannot be inspected ({e})"
        if problem:
            problems.append(problem)
    for path, method, text in _CALLS:
        owner = owner_of(path)
        try:
            source = inspect.getsource(getattr(owner, method))
        except (OSError, TypeError, AttributeError):
            continue  # no source installed: the signature checks above still hold
        if text not in source:
            problems.append(f"{path.rpartition(':')[2]}.{method} no longer calls {text.strip('.')}")
    try:
        _metadata_v12()
    except (ImportError, AttributeError, TypeError) as e:
        problems.append(f"aiokafka's protocol types no longer build a Metadata v12 request ({e})")
    if problems:
        raise DependencyError(
            f"the installed faust/aiokafka lack what the worker relies on: "
            f"{'; '.join(problems)}. Installed: {_versions()}; install the tested versions "
            f"(pip install 'tokensync[worker]')"
        )


def _check_service(service: Any, what: str) -> None:
    """A mode Service instance carries the ``_stopped`` event the drain polls."""
    if not callable(getattr(getattr(service, "_stopped", None), "is_set", None)):
        raise DependencyError(f"faust's {what} has no _stopped event (installed: {_versions()})")


class FaustFetches:
    """What the batch drain reads from faust's consumer (``workers.drain.Fetches``)."""

    def __init__(self, app: Any, topic: str, fetcher: Any = None) -> None:
        self._app = app
        self._consumer: Any = app.consumer
        self._fetcher = fetcher
        self._topic = topic
        self._monitor = getattr(app, "monitor", None)

    def install_drain(self, drain: Callable[[FaustFetches], Awaitable[None]]) -> None:
        """Make faust's Fetcher run ``drain`` instead of the consumer's own loop (faust looks
        ``_drain_messages`` up each time the Fetcher starts, after every rebalance)."""
        consumer = self._consumer
        _check_service(consumer, "consumer")

        async def _drain_messages(fetcher: Any) -> None:
            _check_service(fetcher, "fetcher")
            await drain(FaustFetches(self._app, self._topic, fetcher))

        consumer._drain_messages = _drain_messages

    def stopped(self) -> bool:
        """The consumer or the fetcher is stopping."""
        fetcher = self._fetcher
        return bool(
            self._consumer._stopped.is_set()
            or (fetcher is not None and fetcher._stopped.is_set())
            or self._consumer.should_stop
        )

    async def next_records(self, timeout: float) -> Mapping[int, Sequence[Record]]:
        """One fetch of the topic's records, by partition (others are dropped)."""
        records, _ = await self._consumer._wait_next_records(timeout)
        topic = self._topic
        out: dict[int, list[Record]] = {}
        for tp, batch in (records or {}).items():
            if tp.topic == topic:
                out.setdefault(tp.partition, []).extend(batch)
        return out

    def assigned(self) -> Set[int]:
        """The topic's partitions assigned to this consumer."""
        return {tp.partition for tp in self._consumer.assignment() if tp.topic == self._topic}

    def partition_count(self) -> int:
        """The topic's partition count as the consumer's metadata knows it (0: unknown)."""
        return int(self._consumer.topic_partitions(self._topic) or 0)

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit the next offsets of these partitions for the group."""
        await self._consumer._commit({TP(self._topic, p): o for p, o in offsets.items()})

    def mark_inbound(self, partitions: Sequence[int]) -> None:
        """Tell faust's stall detector that records of these partitions were processed."""
        inbound = getattr(self._monitor, "stream_inbound_time", None)
        if inbound is not None:
            now = time.monotonic()
            for partition in partitions:
                inbound[TP(self._topic, partition)] = now


def redirect_seek(
    app: Any, seek: Callable[[Callable[[], Awaitable[Mapping[TP, int]]]], Awaitable[dict[TP, int]]]
) -> None:
    """Make faust's post-rebalance seek (``seek_to_committed``) call ``seek(original)``."""
    consumer: Any = app.consumer
    original = consumer.seek_to_committed

    async def seek_to_committed() -> dict[TP, int]:
        return await seek(original)

    consumer.seek_to_committed = seek_to_committed


async def seek_wait(app: Any, positions: Mapping[TP, int]) -> None:
    """Position partitions and wait until the consumer is there."""
    consumer: Any = app.consumer
    await consumer.seek_wait(dict(positions))


async def commit(app: Any, offsets: Mapping[TP, int]) -> None:
    """Commit offsets for the group now (faust's public ``commit`` takes only what its own
    streams acknowledged)."""
    consumer: Any = app.consumer
    await consumer._commit(dict(offsets))


# -- Kafka's topic id: a Metadata v12 request from aiokafka's protocol types ---------------

_NO_ID = bytes(16)


@functools.cache
def _metadata_v12() -> Callable[[str], Any]:
    """The Metadata v12 request class (built once; raises if aiokafka's types changed)."""
    from aiokafka.protocol.abstract import AbstractType
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import (
        Boolean,
        CompactArray,
        CompactString,
        Int16,
        Int32,
        Schema,
        TaggedFields,
    )

    class _Uuid(AbstractType):  # type: ignore[misc]
        """Kafka's UUID: 16 raw bytes."""

        @classmethod
        def encode(cls, value: bytes) -> bytes:
            if len(value) != 16:
                raise ValueError(f"a UUID is 16 bytes, not {len(value)}")
            return value

        @classmethod
        def decode(cls, data: BytesIO) -> bytes:
            value = data.read(16)
            if len(value) != 16:
                raise ValueError("Buffer underrun decoding a UUID")
            return value

    class MetadataResponseV12(Response):  # type: ignore[misc]
        API_KEY = 3
        API_VERSION = 12
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            (
                "brokers",
                CompactArray(
                    ("node_id", Int32),
                    ("host", CompactString("utf-8")),
                    ("port", Int32),
                    ("rack", CompactString("utf-8")),
                    ("tags", TaggedFields),
                ),
            ),
            ("cluster_id", CompactString("utf-8")),
            ("controller_id", Int32),
            (
                "topics",
                CompactArray(
                    ("error_code", Int16),
                    ("name", CompactString("utf-8")),
                    ("topic_id", _Uuid),
                    ("is_internal", Boolean),
                    (
                        "partitions",
                        CompactArray(
                            ("error_code", Int16),
                            ("partition_index", Int32),
                            ("leader_id", Int32),
                            ("leader_epoch", Int32),
                            ("replica_nodes", CompactArray(Int32)),
                            ("isr_nodes", CompactArray(Int32)),
                            ("offline_replicas", CompactArray(Int32)),
                            ("tags", TaggedFields),
                        ),
                    ),
                    ("topic_authorized_operations", Int32),
                    ("tags", TaggedFields),
                ),
            ),
            ("tags", TaggedFields),
        )

    class MetadataRequestV12(RequestStruct):  # type: ignore[misc]
        FLEXIBLE_VERSION = True
        API_KEY = 3
        API_VERSION = 12
        RESPONSE_TYPE = MetadataResponseV12
        SCHEMA = Schema(
            (
                "topics",
                CompactArray(
                    ("topic_id", _Uuid),
                    ("name", CompactString("utf-8")),
                    ("tags", TaggedFields),
                ),
            ),
            ("allow_auto_topic_creation", Boolean),
            ("include_topic_authorized_operations", Boolean),
            ("tags", TaggedFields),
        )

    class TopicIdRequest(Request[MetadataRequestV12]):  # type: ignore[misc]
        """Metadata (version 12) of one topic, by name: its id, and the cluster id."""

        API_KEY = 3

        def __init__(self, topic: str) -> None:
            self._topic = topic

        def build(self, request_struct_class: type[MetadataRequestV12]) -> MetadataRequestV12:
            return request_struct_class([(_NO_ID, self._topic, {})], False, False, {})

    return TopicIdRequest


def topic_id_of(response: Any, topic: str) -> str:
    """The id of ``topic`` in a Metadata v12 response (hex); "" when the broker reports
    none (an unknown topic, an error)."""
    for entry in getattr(response, "topics", None) or ():
        error_code, name, raw = entry[0], entry[1], entry[2]
        if name == topic and error_code == 0 and raw != _NO_ID:
            return str(uuid.UUID(bytes=bytes(raw)))
    return ""


async def read_cluster_and_topic_id(
    kafka_bootstrap: str, topic: str, config: KafkaClientConfig | None = None
) -> tuple[str, str]:
    """Kafka's cluster id and ``topic``'s id ("" when the broker gives none: it does not
    speak metadata v12, or the topic does not exist); one attempt, errors raised; a login
    the cluster refuses raises ``config.refused`` (a ConfigError: no point retrying)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import IncompatibleBrokerVersion
    from aiokafka.protocol.metadata import MetadataRequest

    config = config or KafkaClientConfig()
    client = AIOKafkaClient(
        bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000, **config.aiokafka_kwargs()
    )
    try:
        with auth_failures("aiokafka") as refused:  # wrong credentials: no retries
            try:
                await client.bootstrap()
            except Exception as e:
                if refused.refused:
                    raise config.refused(kafka_bootstrap) from e
                raise
        node = client.get_random_node()
        response: Any
        try:
            response = await client.send(node, _metadata_v12()(topic))
            topic_id = topic_id_of(response, topic)
        except (IncompatibleBrokerVersion, NotImplementedError):
            response = await client.send(node, MetadataRequest([topic], False))
            topic_id = ""
        return str(getattr(response, "cluster_id", "") or ""), topic_id
    finally:
        await client.close()
