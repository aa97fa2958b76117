"""The OpenTelemetry SDK behind ``shared.tracing``: set up from ``OTEL_*`` (or a test's span
processor), and the ids of a mutation's trace, derived from its outbox seq.

Imported only by ``shared.tracing``; nothing here imports OpenTelemetry at module level,
so a process without the ``[otel]`` extra never loads it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanContext, Tracer

__all__ = [
    "STATE",
    "active",
    "configure",
    "in_span",
    "install",
    "mutation_context",
    "no_parent",
    "ns_of",
    "remote_parent",
    "seq_ids",
    "shutdown",
    "use_global_provider",
]


def _log() -> Any:
    from shared.logs import get_logger  # not at import: validators start without structlog

    return get_logger(__name__)


class _Local(threading.local):
    """Per-thread hook state, with class defaults (a missing attribute of a plain
    ``threading.local`` costs an exception, ~1.5 µs, on every record)."""

    relay: Any = None  # shared.tracing's batch of the relay thread
    store_began: int | None = None


class _State:
    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.provider: TracerProvider | None = None
        self.namespace = "tokensync"
        self.ids: Any = None  # the provider's _SeqIds
        self.local = _Local()


STATE = _State()


def active() -> bool:
    """Whether this process traces (``configure`` or ``install`` succeeded)."""
    return STATE.tracer is not None


def _falsy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in {"", "0", "false", "no", "off"}


def configure(service: str, namespace: str, environ: Mapping[str, str]) -> bool:
    """Trace this process when the SDK is installed and ``OTEL_*`` does not turn it off;
    whether it does. ``service``: the default ``service.name``; ``namespace``: the topic
    prefix (mutation trace ids are derived from it and the seq)."""
    if STATE.tracer is not None:
        return True  # once per process
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
    exporter = _exporter(kind)
    if exporter is None:
        return False
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = None if environ.get("OTEL_SERVICE_NAME") else service
    install(BatchSpanProcessor(exporter), namespace=namespace, service=name)
    _log().info("tracing_on", exporter=kind, service=environ.get("OTEL_SERVICE_NAME") or service)
    return True


def _exporter(kind: str) -> SpanExporter | None:
    """The span exporter ``OTEL_TRACES_EXPORTER`` names (None: not installed or unknown)."""
    try:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
    except ImportError:
        return None  # the [otel] extra is not installed: tracing stays off, for free
    if kind == "console":
        return ConsoleSpanExporter()
    if kind != "otlp":
        _log().warning("tracing_off", reason=f"unknown OTEL_TRACES_EXPORTER {kind[:32]!r}")
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        _log().warning(
            "tracing_off",
            reason="OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http"
            " (pip install 'tokensync[otel]')",
        )
        return None
    return OTLPSpanExporter()


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
    STATE.provider = provider
    STATE.ids = ids
    STATE.namespace = namespace
    STATE.tracer = provider.get_tracer("tokensync")


def use_global_provider(namespace: str = "tokensync") -> None:
    """Trace into the tracer provider the host application set up itself (a service that
    configured OpenTelemetry: its validators' spans join its requests' traces)."""
    from opentelemetry import trace

    STATE.namespace = namespace
    STATE.tracer = trace.get_tracer("tokensync")


def shutdown() -> None:
    """Flush and stop (entry points, at exit)."""
    if STATE.provider is not None:
        STATE.provider.shutdown()
    STATE.tracer = None
    STATE.provider = None


def seq_ids(seq: int) -> tuple[int, int]:
    digest = hashlib.sha256(f"tokensync-mutation\0{STATE.namespace}\0{seq}".encode()).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


def mutation_context(seq: int) -> SpanContext:
    """The span context of the mutation ``seq`` (its root span's, derived from the seq)."""
    from opentelemetry.trace import SpanContext, TraceFlags

    trace_id, span_id = seq_ids(seq)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))


def ns_of(us: int) -> int:
    return us * 1000


def remote_parent(ctx: SpanContext) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


def in_span(span: Span) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def no_parent() -> Any:
    """The parent of a mutation span: none (it is its trace's root)."""
    from opentelemetry.context import Context

    return Context()
