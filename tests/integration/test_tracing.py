"""OpenTelemetry across real processes: one revocation is one trace, from the store and
the relay (in this process, into the SDK's in-memory exporter) through Kafka's
``traceparent`` header to every region's worker (their own processes, exporting OTLP/HTTP
to a collector run by this test) and the receipt, each span parented on the one before."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from producer.receipts import wait_for_receipt
from shared import tracing
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration

USER = "App\\Models\\User"
REGIONS = ("eu", "us")


@dataclass(frozen=True)
class Seen:
    """A span as the test compares it: ids in hex, parent "" for a root."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP trace receiver (protobuf) on a free port."""

    def __init__(self) -> None:
        self.spans: list[Seen] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                found = [
                    Seen(
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        {a.key: _value(a.value) for a in span.attributes},
                    )
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
                with collector.lock:
                    collector.spans.extend(found)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def of_trace(self, trace_id: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    yield found
    found.close()


@pytest.fixture
def relay_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    tracing.shutdown()


def test_one_revocation_is_one_trace_with_the_relays_and_every_regions_spans_parented_correctly(
    any_pipeline: Pipeline, collector: Collector, relay_spans: InMemorySpanExporter
) -> None:
    p = any_pipeline
    tracing.install(SimpleSpanProcessor(relay_spans), namespace=p.settings.topic_prefix)
    p.built.env_extra.update(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    p.start_relay()
    for region in REGIONS:
        p.start_worker(region)
    for region in REGIONS:
        p.wait_ready(region)
    issued = p.store.issue(USER, 1, "target")
    p.wait_applied(issued.seq)
    relay_spans.clear()
    revoked = p.store.revoke_token(issued.id)
    p.wait_applied(revoked.seq)
    receipt = wait_for_receipt(
        p.settings, p.store, revoked.seq, regions=[p.settings.region(r) for r in REGIONS]
    )
    assert receipt.complete

    root_ctx = tracing.mutation_context(revoked.seq)
    trace_id, root_id = f"{root_ctx.trace_id:032x}", f"{root_ctx.span_id:016x}"
    mine = [
        Seen(
            s.name,
            f"{s.context.trace_id:032x}",
            f"{s.context.span_id:016x}",
            f"{s.parent.span_id:016x}" if s.parent else "",
            dict(s.attributes or {}),
        )
        for s in relay_spans.get_finished_spans()
        if s.context.trace_id == root_ctx.trace_id
    ]
    by_name = {s.name: s for s in mine}
    root = by_name["tokensync.mutation"]
    assert ("", root_id, revoked.seq) == (
        root.parent_id,
        root.span_id,
        root.attributes["tokensync.seq"],
    )
    # the store's span (the Python API here; the CLI and the HTTP API alike) and the receipt
    assert root_id == by_name["tokensync.store.token.revoke"].parent_id
    assert root_id == by_name["tokensync.receipt"].parent_id
    batch = by_name["tokensync.relay.batch"]
    assert root_id == batch.parent_id
    for stage in ("read", "sign", "produce", "ack"):
        assert batch.span_id == by_name[f"tokensync.relay.{stage}"].parent_id, stage

    def every_region_exported() -> bool:
        spans = collector.of_trace(trace_id)
        regions = {
            s.attributes.get("tokensync.region")
            for s in spans
            if s.name == "tokensync.worker.apply"
        }
        return set(REGIONS) <= regions

    wait_for(every_region_exported, 20, "every region's spans at the collector")
    theirs = collector.of_trace(trace_id)
    for region in REGIONS:
        [worker] = [
            s
            for s in theirs
            if s.name == "tokensync.worker.batch" and s.attributes["tokensync.region"] == region
        ]
        assert batch.span_id == worker.parent_id, region
        children = {s.name for s in theirs if s.parent_id == worker.span_id}
        assert {
            "tokensync.worker.fetch",
            "tokensync.worker.verify",
            "tokensync.worker.apply",
        } == children
    assert {trace_id} == {s.trace_id for s in [*mine, *theirs]}


def test_a_validation_under_a_recording_span_is_traced_without_the_token_and_otherwise_not(
    redis_url: str, relay_spans: InMemorySpanExporter
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from shared.validator import Validator

    tracing.install(SimpleSpanProcessor(relay_spans))
    service = TracerProvider().get_tracer("service")  # the host application's own
    token = "1|" + "a" * 40 + "00000000"
    validator = Validator.from_url(redis_url)
    try:
        validator.validate(token)  # no request span around it: nothing
        assert () == tuple(relay_spans.get_finished_spans())
        with service.start_as_current_span("GET /orders") as request:
            validator.validate(token, "orders:read")
        [span] = relay_spans.get_finished_spans()
    finally:
        validator.close()
    assert "tokensync.validate" == span.name
    assert span.parent is not None
    assert request.get_span_context().span_id == span.parent.span_id
    attributes = dict(span.attributes or {})
    assert {"tokensync.outcome", "tokensync.source"} == set(attributes)
    assert all(token[2:12] not in str(v) for v in attributes.values())
