"""Optional OpenTelemetry tracing, and the hooks the relay and the workers call (one line
each): they also feed the stage timing of ``shared.stages`` and the stage histograms.

Off and free unless the ``[otel]`` extra (the OpenTelemetry SDK) is installed and an entry
point calls ``configure``, which reads the standard ``OTEL_*`` variables:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``) or an
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` (then ``otlp``) turns it on;
``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER[_ARG]`` and ``OTEL_BSP_*`` work as the SDK documents them. While
off, each hook is one or two attribute tests.

A revocation's trace: the mutation's trace id and root span id are derived from its
outbox seq (and the topic prefix), so the relay, which only sees the row, joins the
trace the store started (``mutation_span``, API and CLI) and rows a Laravel app wrote
get the same shape. The relay emits ``tokensync.mutation`` (the row's commit to its
acknowledgement; for rows the store wrote it is the store span's child, otherwise the
root) -> ``tokensync.relay.batch`` (read, sign, produce, ack), and every record of the
batch carries the batch span as a W3C ``traceparent`` header (outside the signature).
Each region's worker continues it: ``tokensync.worker.batch`` (fetch, verify, apply, with
the invalidation published by the same Lua call as an event). A batch of many rows
joins the trace of its first row (the others' traces hold their store span only).
Never a token, a hash or a principal in a span: seqs, counts, regions, partitions.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shared import stages
from shared.logs import get_logger

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanContext, Tracer

    from shared.keys import RedisKeys

__all__ = [
    "TRACEPARENT",
    "active",
    "batch_applied",
    "batch_fetched",
    "batch_verified",
    "configure",
    "install",
    "mutation_context",
    "record_headers",
    "relay_acked",
    "relay_produced",
    "relay_read",
    "relay_woke",
    "shutdown",
]

log = get_logger(__name__)

TRACEPARENT = "traceparent"
_LINKS_MAX = 16  # trace contexts a worker batch keeps besides its parent


class _State:
    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.provider: TracerProvider | None = None
        self.namespace = "tokensync"
        self.ids: Any = None  # the provider's _SeqIds
        self.local = threading.local()


_state = _State()


def active() -> bool:
    """Whether this process traces (``configure`` or ``install`` succeeded)."""
    return _state.tracer is not None


def _falsy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in {"", "0", "false", "no", "off"}


def configure(service: str, namespace: str, environ: Mapping[str, str]) -> bool:
    """Trace this process when the SDK is installed and ``OTEL_*`` does not turn it off;
    whether it does. ``service``: the default ``service.name``; ``namespace``: the topic
    prefix (mutation trace ids are derived from it and the seq)."""
    if not _falsy(environ.get("OTEL_SDK_DISABLED")):
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    # an installed SDK alone does not start exporting to localhost:4318: an exporter or
    # an endpoint must be named
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "").strip().lower()
    if kind in {"", "none"}:
        return False
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        return False  # the [otel] extra is not installed: tracing stays off, for free
    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "tracing_off",
                reason="OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http"
                " (pip install 'tokensync[otel]')",
            )
            return False
        exporter = OTLPSpanExporter()
    else:
        log.warning("tracing_off", reason=f"unknown OTEL_TRACES_EXPORTER {kind[:32]!r}")
        return False
    name = None if environ.get("OTEL_SERVICE_NAME") else service
    install(BatchSpanProcessor(exporter), namespace=namespace, service=name)
    log.info("tracing_on", exporter=kind, service=environ.get("OTEL_SERVICE_NAME") or service)
    return True


def install(processor: Any, *, namespace: str = "tokensync", service: str | None = None) -> None:
    """Trace this process into ``processor`` (a span processor; tests pass a
    ``SimpleSpanProcessor`` around the SDK's in-memory exporter). Also the global tracer
    provider, so services' validators and middleware trace into it."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _SeqIds(RandomIdGenerator):
        """Random ids, except for a mutation's root span: ids derived from its seq."""

        def __init__(self) -> None:
            self.forced = threading.local()

        def generate_trace_id(self) -> int:
            forced = getattr(self.forced, "ids", None)
            return forced[0] if forced else super().generate_trace_id()

        def generate_span_id(self) -> int:
            forced = getattr(self.forced, "ids", None)
            if forced:
                self.forced.ids = None  # once: the trace id was asked for first
                return int(forced[1])
            return super().generate_span_id()

    resource = Resource.create({"service.name": service} if service else {})
    ids = _SeqIds()
    provider = TracerProvider(resource=resource, id_generator=ids)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)  # once per process (the API refuses a second)
    _state.provider = provider
    _state.ids = ids
    _state.namespace = namespace
    _state.tracer = provider.get_tracer("tokensync")


def shutdown() -> None:
    """Flush and stop (entry points, at exit)."""
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.tracer = None
    _state.provider = None


def _ids(seq: int) -> tuple[int, int]:
    digest = hashlib.sha256(f"tokensync-mutation\0{_state.namespace}\0{seq}".encode()).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


def mutation_context(seq: int) -> SpanContext:
    """The span context of the mutation ``seq`` (its root span's, derived from the seq)."""
    from opentelemetry.trace import SpanContext, TraceFlags

    trace_id, span_id = _ids(seq)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))


def _ns(us: int) -> int:
    return us * 1000


# --- the relay (one thread) --------------------------------------------------------------
@dataclass
class _RelayBatch:
    woke_us: int
    read_us: int = 0
    signed_us: int = 0
    produced_us: int = 0
    first_seq: int = -1
    header: bytes = b""
    span: Span | None = None


def _relay_batch() -> _RelayBatch | None:
    batch: _RelayBatch | None = getattr(_state.local, "relay", None)
    return batch


def relay_woke() -> None:
    """The relay starts a batch (it woke for a commit or a timer)."""
    if _state.tracer is None and not stages.enabled():
        return
    _state.local.relay = _RelayBatch(stages.now_us())


def relay_read() -> None:
    """The relay read the outbox rows of its batch."""
    batch = _relay_batch()
    if batch is not None:
        batch.read_us = stages.now_us()


def record_headers(headers: list[tuple[str, bytes]], seq: int) -> list[tuple[str, bytes]]:
    """``headers`` of an outbox record about to be produced: with the trace context and
    the stage stamps when tracing or stage timing is on, else unchanged."""
    batch = _relay_batch()
    if batch is None:
        return headers
    now = stages.now_us()
    batch.signed_us = now
    stamped = [*headers, (stages.STAGE_HEADER, f"{seq},{batch.woke_us},{now}".encode())]
    if _state.tracer is None:
        return stamped
    if batch.span is None:
        batch.first_seq = seq
        batch.span = _state.tracer.start_span(
            "tokensync.relay.batch",
            context=_remote(mutation_context(seq)),
            start_time=_ns(batch.woke_us),
            attributes={"tokensync.seq.first": seq},
        )
        ctx = batch.span.get_span_context()
        batch.header = (
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()
        )
    return [*stamped, (TRACEPARENT, batch.header)]


def relay_produced() -> None:
    """The relay's client has every record of the batch (the flush waits for the acks)."""
    batch = _relay_batch()
    if batch is not None:
        batch.produced_us = stages.now_us()


class _Published(Protocol):
    @property
    def seq(self) -> int: ...


def relay_acked(items: Sequence[_Published], committed_ms: Iterable[int] = ()) -> None:
    """The broker acknowledged these records (``committed_ms``: their rows' commit times,
    in the same order): the relay's spans end, the stages are remembered."""
    batch = _relay_batch()
    if batch is None:
        return
    _state.local.relay = None
    seqs = [item.seq for item in items]
    stages.relay_acked(seqs)
    now = stages.now_us()
    commits = list(committed_ms)
    _observe_relay(batch, now, commits[0] if commits else None)
    if batch.span is None or _state.tracer is None:
        return
    tracer, parent = batch.span, _in(batch.span)
    read_us = batch.read_us or batch.woke_us
    produced_us = batch.produced_us or batch.signed_us
    for name, start, end in (
        ("read", batch.woke_us, read_us),
        ("sign", read_us, batch.signed_us),
        ("produce", batch.signed_us, produced_us),
        ("ack", produced_us, now),
    ):
        child = _state.tracer.start_span(
            f"tokensync.relay.{name}", context=parent, start_time=_ns(start)
        )
        child.end(end_time=_ns(max(start, end)))
    tracer.set_attribute("tokensync.records", len(seqs))
    tracer.set_attribute("tokensync.seq.last", seqs[-1] if seqs else -1)
    tracer.end(end_time=_ns(now))
    # the mutation span of the batch's first row: its commit to its acknowledgement
    start_ms = commits[0] if commits else batch.woke_us // 1000
    _state.ids.forced.ids = _ids(batch.first_seq)
    root = _state.tracer.start_span(
        "tokensync.mutation",
        context=_root_context(),
        start_time=start_ms * 1_000_000,
        attributes={"tokensync.seq": batch.first_seq},
    )
    _state.ids.forced.ids = None
    root.end(end_time=_ns(now))


def _remote(ctx: SpanContext) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


def _in(span: Span) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def _root_context() -> Any:
    """The parent of a mutation span: none (it is its trace's root)."""
    from opentelemetry.context import Context

    return Context()


# --- the worker ---------------------------------------------------------------------------
class _Record(Protocol):
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(slots=True)
class _Fetched:
    fetched_us: int
    stamped: list[tuple[int, int, int]] = field(default_factory=list)
    parents: list[tuple[bytes, int]] = field(default_factory=list)  # traceparent, produced


def batch_fetched(records: Sequence[_Record]) -> _Fetched | None:
    """The worker took a fetch (before verifying it): None unless tracing or stage timing
    is on."""
    if _state.tracer is None and not stages.enabled():
        return None
    fetched = _Fetched(stages.now_us())
    seen: set[bytes] = set()
    for record in records:
        stamp: tuple[int, int, int] | None = None
        parent = b""
        for name, raw in record.headers or ():
            if name == stages.STAGE_HEADER:
                stamp = stages.parse_header(raw)
            elif name == TRACEPARENT:
                parent = raw
        if stamp is None:
            continue
        fetched.stamped.append(stamp)
        if parent and parent not in seen and len(seen) <= _LINKS_MAX:
            seen.add(parent)
            fetched.parents.append((parent, stamp[2]))
    return fetched if fetched.stamped else None


def batch_verified(fetched: _Fetched | None) -> stages.BatchStages | None:
    """The stamps a verified batch carries to its apply."""
    if fetched is None:
        return None
    return stages.BatchStages(
        fetched.fetched_us,
        fetched.stamped,
        verified_us=stages.now_us(),
        parents=fetched.parents,
    )


async def batch_applied(
    client: aioredis.Redis, keys: RedisKeys, batch: stages.BatchStages | None, region: str
) -> None:
    """Redis applied the batch: the region's spans, histograms and debug stamps."""
    if batch is None:
        return
    applied_us = stages.now_us()
    _observe_worker(batch, applied_us, region)
    if stages.enabled():
        await stages.record_applied(client, keys.stages, batch, applied_us)
    if _state.tracer is not None and batch.parents:
        _worker_spans(batch, applied_us, region)


def _worker_spans(batch: stages.BatchStages, applied_us: int, region: str) -> None:
    from opentelemetry.trace import Link
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    assert _state.tracer is not None
    propagator = TraceContextTextMapPropagator()
    contexts = [
        (propagator.extract({TRACEPARENT: raw.decode("ascii", "replace")}), produced)
        for raw, produced in batch.parents
    ]
    (parent, produced_us), others = contexts[0], contexts[1:]
    links = []
    for ctx, _ in others:
        from opentelemetry import trace

        links.append(Link(trace.get_current_span(ctx).get_span_context()))
    span = _state.tracer.start_span(
        "tokensync.worker.batch",
        context=parent,
        start_time=_ns(min(produced_us, batch.fetched_us)),
        links=links,
        attributes={"tokensync.region": region, "tokensync.records": len(batch.records)},
    )
    inside = _in(span)
    applying_us = batch.apply_started_us or batch.verified_us
    for name, start, end in (
        ("fetch", produced_us, batch.fetched_us),
        ("verify", batch.fetched_us, batch.verified_us),
        ("apply", applying_us, applied_us),
    ):
        child = _state.tracer.start_span(
            f"tokensync.worker.{name}",
            context=inside,
            start_time=_ns(min(start, end)),
            attributes={"tokensync.region": region},
        )
        if name == "apply":
            child.add_event("invalidation_published", timestamp=_ns(applied_us))
        child.end(end_time=_ns(end))
    span.end(end_time=_ns(applied_us))


def _observe_relay(batch: _RelayBatch, acked_us: int, committed_ms: int | None) -> None:
    from shared.metrics import STAGE_SECONDS

    read_us = batch.read_us or batch.woke_us
    if committed_ms is not None:
        STAGE_SECONDS.labels("outbox", "").observe(
            max(0, batch.woke_us - committed_ms * 1000) / 1e6
        )
    STAGE_SECONDS.labels("relay_read", "").observe((read_us - batch.woke_us) / 1e6)
    STAGE_SECONDS.labels("relay_sign", "").observe(max(0, batch.signed_us - read_us) / 1e6)
    produced = batch.produced_us or batch.signed_us
    STAGE_SECONDS.labels("relay_ack", "").observe(max(0, acked_us - produced) / 1e6)


def _observe_worker(batch: stages.BatchStages, applied_us: int, region: str) -> None:
    from shared.metrics import STAGE_SECONDS

    produced = min(p for _, _, p in batch.records)
    STAGE_SECONDS.labels("kafka", region).observe(max(0, batch.fetched_us - produced) / 1e6)
    STAGE_SECONDS.labels("verify", region).observe((batch.verified_us - batch.fetched_us) / 1e6)
    start = batch.apply_started_us or batch.verified_us
    STAGE_SECONDS.labels("apply", region).observe(max(0, applied_us - start) / 1e6)


def apply_started(batch: stages.BatchStages | None) -> None:
    """The worker hands the batch to Redis now."""
    if batch is not None:
        batch.apply_started_us = stages.now_us()


def clock_ms() -> float:
    """Wall clock, milliseconds (for callers that time a stage themselves)."""
    return time.time() * 1000
