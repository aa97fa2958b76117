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
Never a token, a hash or a principal in a span: seqs, counts, regions, partitions. A
hook that fails logs ``tracing_failed`` once and the traced work goes on.

Over 400 lines: it is the one door every traced process goes through (store, relay,
worker, validator), so their hooks stay one line each; the SDK set-up is ``shared.otel``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol

from shared import stages
from shared.otel import (
    STATE,
    active,
    configure,
    in_span,
    install,
    mutation_context,
    no_parent,
    ns_of,
    remote_parent,
    seq_ids,
    shutdown,
    use_global_provider,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from opentelemetry.trace import Span

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
    "receipt",
    "record_headers",
    "relay_acked",
    "relay_produced",
    "relay_read",
    "relay_woke",
    "shutdown",
    "store_began",
    "store_mutation",
    "use_global_provider",
    "validated",
    "validation_began",
]

TRACEPARENT = "traceparent"
_LINKS_MAX = 16  # trace contexts a worker batch keeps besides its parent

P = ParamSpec("P")


def _log() -> Any:
    from shared.logs import get_logger  # not at import: validators start without structlog

    return get_logger(__name__)


_failed: set[str] = set()


def _quiet(func: Callable[P, None]) -> Callable[P, None]:
    """Tracing never breaks what it traces: a failure is logged (once per hook) and the
    relay, the worker, the store or the validator goes on."""

    @functools.wraps(func)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except Exception:  # a loop boundary of sorts: the traced work must go on
            if func.__name__ not in _failed:
                _failed.add(func.__name__)
                _log().warning("tracing_failed", hook=func.__name__, exc_info=True)

    return guarded


# --- the store and the receipt ----------------------------------------------------------
def store_began() -> None:
    """A store transaction begins (its mutation span starts here)."""
    if STATE.tracer is not None:
        STATE.local.store_began = time.time_ns()


@_quiet
def store_mutation(action: str, seq: int | None) -> None:
    """The store wrote the mutation ``seq``: its span, a child of the mutation's root (the
    relay's ``tokensync.mutation``), linked to the caller's span (an API request's)."""
    if STATE.tracer is None or not seq:
        return
    from opentelemetry import trace

    began = STATE.local.store_began or time.time_ns()
    STATE.local.store_began = None
    caller = trace.get_current_span().get_span_context()
    span = STATE.tracer.start_span(
        f"tokensync.store.{action}",
        context=remote_parent(mutation_context(seq)),
        start_time=began,
        links=[trace.Link(caller)] if caller.is_valid else [],
        attributes={"tokensync.seq": seq},
    )
    span.end()


@_quiet
def receipt(seq: int, regions: Sequence[tuple[str, str, float | None]]) -> None:
    """A receipt of ``seq`` was read: per region its outcome and ms after the commit."""
    if STATE.tracer is None:
        return
    attributes: dict[str, str | float | int] = {"tokensync.seq": seq}
    for name, state, after_ms in regions:
        attributes[f"tokensync.region.{name}.state"] = state
        if after_ms is not None:
            attributes[f"tokensync.region.{name}.after_ms"] = after_ms
    span = STATE.tracer.start_span(
        "tokensync.receipt", context=remote_parent(mutation_context(seq)), attributes=attributes
    )
    span.end()


# --- validation -------------------------------------------------------------------------
_began: ContextVar[int] = ContextVar("tokensync_validation_began", default=0)


def validation_began() -> None:
    """A validator starts answering (a span follows only under a recording span)."""
    if STATE.tracer is not None:
        _began.set(time.time_ns())


def validated(outcome: str, source: str) -> None:
    """A validator answered: ``tokensync.validate`` (outcome and source: never the token)
    as a child of the caller's span when that one is recording, so validations are
    sampled exactly as the requests around them are; nothing without one."""
    if STATE.tracer is None:
        return
    from opentelemetry import trace

    if trace.get_current_span().is_recording():
        _validation_span(outcome, source)


@_quiet
def _validation_span(outcome: str, source: str) -> None:
    assert STATE.tracer is not None
    span = STATE.tracer.start_span(
        "tokensync.validate",
        start_time=_began.get() or None,
        attributes={"tokensync.outcome": outcome, "tokensync.source": source},
    )
    span.end()


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
    batch: _RelayBatch | None = STATE.local.relay
    return batch


def relay_woke() -> None:
    """The relay starts a batch (it woke for a commit or a timer)."""
    if STATE.tracer is None and not stages.enabled():
        return
    STATE.local.relay = _RelayBatch(stages.now_us())


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
    if STATE.tracer is None:
        return stamped
    if batch.first_seq < 0:
        batch.first_seq = seq
        _start_relay_span(batch, seq)
    return [*stamped, (TRACEPARENT, batch.header)] if batch.header else stamped


@_quiet
def _start_relay_span(batch: _RelayBatch, seq: int) -> None:
    """The batch's span, in the trace of its first row; its context goes in every record."""
    assert STATE.tracer is not None
    batch.span = STATE.tracer.start_span(
        "tokensync.relay.batch",
        context=remote_parent(mutation_context(seq)),
        start_time=ns_of(batch.woke_us),
        attributes={"tokensync.seq.first": seq},
    )
    ctx = batch.span.get_span_context()
    batch.header = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()


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
    STATE.local.relay = None
    seqs = [item.seq for item in items]
    stages.relay_acked(seqs)
    now = stages.now_us()
    commits = list(committed_ms)
    _observe_relay(batch, now, commits[0] if commits else None)
    if batch.span is not None and STATE.tracer is not None:
        _relay_spans(batch, seqs, commits, now)


@_quiet
def _relay_spans(batch: _RelayBatch, seqs: list[int], commits: list[int], now: int) -> None:
    """The relay's spans of a batch the broker acknowledged at ``now``."""
    assert STATE.tracer is not None and batch.span is not None
    tracer, parent = batch.span, in_span(batch.span)
    read_us = batch.read_us or batch.woke_us
    produced_us = batch.produced_us or batch.signed_us
    for name, start, end in (
        ("read", batch.woke_us, read_us),
        ("sign", read_us, batch.signed_us),
        ("produce", batch.signed_us, produced_us),
        ("ack", produced_us, now),
    ):
        child = STATE.tracer.start_span(
            f"tokensync.relay.{name}", context=parent, start_time=ns_of(start)
        )
        child.end(end_time=ns_of(max(start, end)))
    tracer.set_attribute("tokensync.records", len(seqs))
    tracer.set_attribute("tokensync.seq.last", seqs[-1] if seqs else -1)
    tracer.end(end_time=ns_of(now))
    # the mutation span of the batch's first row: its commit to its acknowledgement
    start_ms = commits[0] if commits else batch.woke_us // 1000
    STATE.ids.forced.ids = seq_ids(batch.first_seq)
    try:
        root = STATE.tracer.start_span(
            "tokensync.mutation",
            context=no_parent(),
            start_time=start_ms * 1_000_000,
            attributes={"tokensync.seq": batch.first_seq},
        )
    finally:
        STATE.ids.forced.ids = None
    root.end(end_time=ns_of(now))


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
    if STATE.tracer is None and not stages.enabled():
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
        try:
            await stages.record_applied(client, keys.stages, batch, applied_us)
        except Exception as e:  # a debug aid never fails a batch Redis applied
            _log().warning("stage_stamps_not_written", error=str(e))
    if STATE.tracer is not None and batch.parents:
        _worker_spans(batch, applied_us, region)


@_quiet
def _worker_spans(batch: stages.BatchStages, applied_us: int, region: str) -> None:
    from opentelemetry.trace import Link
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    assert STATE.tracer is not None
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
    span = STATE.tracer.start_span(
        "tokensync.worker.batch",
        context=parent,
        start_time=ns_of(min(produced_us, batch.fetched_us)),
        links=links,
        attributes={"tokensync.region": region, "tokensync.records": len(batch.records)},
    )
    inside = in_span(span)
    applying_us = batch.apply_started_us or batch.verified_us
    for name, start, end in (
        ("fetch", produced_us, batch.fetched_us),
        ("verify", batch.fetched_us, batch.verified_us),
        ("apply", applying_us, applied_us),
    ):
        child = STATE.tracer.start_span(
            f"tokensync.worker.{name}",
            context=inside,
            start_time=ns_of(min(start, end)),
            attributes={"tokensync.region": region},
        )
        if name == "apply":
            child.add_event("invalidation_published", timestamp=ns_of(applied_us))
        child.end(end_time=ns_of(end))
    span.end(end_time=ns_of(applied_us))


@_quiet
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


@_quiet
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
