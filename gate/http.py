"""HTTP/1.1 for the gate: an asyncio protocol over httptools (llhttp), keep-alive, limits.

No ASGI layer: each connection parses with llhttp, queues complete requests (pipelining
answers in order), and writes one pre-assembled response per request. Oversized or
malformed requests get a 4xx with a JSON body and the connection is closed; nothing
here ever answers 500 for bad input.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import httptools
import orjson
import structlog

from gate.app import GateRequest, GateResponse
from gate.metrics import GateMetrics

__all__ = ["MAX_BODY", "MAX_HEADER_BYTES", "GateProtocol"]

log = structlog.get_logger("gate.http")

MAX_HEADER_BYTES = 16 * 1024  # request line and headers together
MAX_HEADERS = 100
MAX_BODY = 16 * 1024
IDLE_TIMEOUT_S = 75.0

Handler = Callable[[GateRequest], Awaitable[GateResponse]]
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def _route(path: str) -> str:
    if path == "/auth" or path.startswith("/auth/"):
        return "auth"
    return {"/introspect": "introspect", "/healthz": "healthz", "/metrics": "metrics"}.get(
        path, "other"
    )


def encode_response(response: GateResponse, keep_alive: bool, head: bool = False) -> bytes:
    """The bytes of one HTTP/1.1 response."""
    lines = [
        b"HTTP/1.1 %d %s" % (response.status, _REASONS.get(response.status, b"Unknown")),
        b"content-type: " + response.content_type.encode(),
        b"content-length: %d" % len(response.body),
    ]
    lines.extend(f"{k}: {v}".encode("latin-1") for k, v in response.headers)
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else response.body)


def _error(status: int, description: str) -> GateResponse:
    body = orjson.dumps({"error": "invalid_request", "error_description": description})
    return GateResponse(status, body=body, outcome="bad_request")


class _RejectedError(Exception):
    """Raised from a parser callback when a limit is passed."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


class GateProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, metrics: GateMetrics) -> None:
        self._handler = handler
        self._metrics = metrics
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[GateRequest, bool, float]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._reset()
        self._idle: asyncio.TimerHandle | None = None

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._header_count = 0
        self._body: list[bytes] = []
        self._body_size = 0

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._arm_idle()
        try:
            self._parser.feed_data(data)
        except _RejectedError as e:
            self._fail(e.status, e.description)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            # httptools wraps what a callback raised; the limit we hit is its context
            cause = e.__context__ or e.__cause__
            if isinstance(cause, _RejectedError):
                self._fail(cause.status, cause.description)
            else:
                self._fail(400, "malformed HTTP request")

    # --- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _RejectedError(414, "request line too long")
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            raise _RejectedError(431, "request headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # repeated headers join with commas (RFC 9110 5.3); the cookie header with "; "
        if key in self._headers:
            text = self._headers[key] + ("; " if key == "cookie" else ", ") + text
        self._headers[key] = text

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            raise _RejectedError(413, "request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        try:
            parsed = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError as e:
            raise _RejectedError(400, "malformed request target") from e
        path = parsed.path.decode("latin-1") if parsed.path else "/"
        query = parsed.query.decode("latin-1") if parsed.query else ""
        method = self._parser.get_method().decode("latin-1")
        request = GateRequest(method, path, query, self._headers, b"".join(self._body))
        self._queue.append((request, self._parser.should_keep_alive(), time.perf_counter()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    # --- answering ----------------------------------------------------------------------
    async def _serve(self) -> None:
        while self._queue and not self._closing:
            request, keep_alive, started = self._queue.popleft()
            try:
                response = await self._handler(request)
            except Exception:  # the loop boundary: log with traceback, answer 500 once
                log.exception("gate_request_failed", path=request.path)
                response = GateResponse(
                    500, body=b'{"error":"server_error"}', outcome="unavailable"
                )
                keep_alive = False
            self._write(response, keep_alive, request.method == "HEAD")
            self._metrics.observe(
                _route(request.path), response.outcome, time.perf_counter() - started
            )
            if not keep_alive:
                return

    def _write(self, response: GateResponse, keep_alive: bool, head: bool = False) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        transport.write(encode_response(response, keep_alive, head))
        if not keep_alive:
            self._closing = True
            transport.close()

    def _fail(self, status: int, description: str) -> None:
        """Answer a request that could not be parsed, then close the connection."""
        started = time.perf_counter()
        self._queue.clear()
        response = _error(status, description)
        self._write(response, keep_alive=False)
        self._metrics.observe("other", "bad_request", time.perf_counter() - started)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(IDLE_TIMEOUT_S, self._idle_close)

    def _idle_close(self) -> None:
        if self._transport is not None and not self._queue:
            self._closing = True
            self._transport.close()
