"""HTTP/1.1 for the gate: an asyncio protocol over httptools (llhttp), keep-alive, limits.

No ASGI layer: each connection parses with llhttp, queues complete requests (pipelining
answers in order), and writes one pre-assembled response per request. Oversized or
malformed requests get a 4xx with a JSON body and the connection is closed; nothing
here ever answers 500 for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
MAX_QUEUED = 32  # pipelined requests waiting for their turn before reading pauses
MAX_UNSENT = 1024 * 1024  # answers a client leaves unread before it is disconnected
IDLE_TIMEOUT_S = 75.0

Handler = Callable[[GateRequest], Awaitable[GateResponse]]
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def _route(path: str) -> str:
    if path == "/auth" or path.startswith("/auth/"):
        return "auth"
    return {"/introspect": "introspect", "/healthz": "healthz", "/metrics": "metrics"}.get(
        path, "other"
    )


def encode_response(response: GateResponse, keep_alive: bool, head: bool = False) -> bytes:
    """The bytes of one HTTP/1.1 response."""
    text = "".join([f"{k}: {v}\r\n" for k, v in response.headers])
    return b"".join(
        (
            _STATUS_LINES.get(response.status) or b"HTTP/1.1 %d Unknown\r\n" % response.status,
            b"content-type: %s\r\ncontent-length: %d\r\n"
            % (response.content_type.encode(), len(response.body)),
            text.encode("latin-1"),
            b"\r\n" if keep_alive else b"connection: close\r\n\r\n",
            b"" if head else response.body,
        )
    )


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
        self._last_active = 0.0

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
        sock = transport.get_extra_info("socket")
        if sock is not None:  # answers are small: never wait for Nagle
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        # a request in flight finishes (cancelling a Redis call midway would cost its
        # connection) and its answer is dropped; nothing else is read
        self._closing = True
        self._queue.clear()
        if self._idle is not None:
            self._idle.cancel()

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

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

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
        if len(self._queue) >= MAX_QUEUED and self._transport is not None:
            self._transport.pause_reading()  # a pipelining client waits for its answers
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    # --- answering ----------------------------------------------------------------------
    async def _serve(self) -> None:
        while self._queue and not self._closing:
            request, keep_alive, started = self._queue.popleft()
            if len(self._queue) == MAX_QUEUED // 2 and self._transport is not None:
                self._transport.resume_reading()
            try:
                response = await self._handler(request)
            except Exception:  # the loop boundary: log with traceback, answer 500 once
                log.exception("gate_request_failed", path=request.path)
                response = GateResponse(
                    500, body=b'{"error":"server_error"}', outcome="server_error"
                )
                keep_alive = False
            # counted before it is sent: whoever reads /metrics after the answer sees it
            self._metrics.observe(
                _route(request.path), response.outcome, time.perf_counter() - started
            )
            self._write(response, keep_alive, request.method == "HEAD")
            if not keep_alive:
                return

    def _write(self, response: GateResponse, keep_alive: bool, head: bool = False) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        transport.write(encode_response(response, keep_alive, head))
        if transport.get_write_buffer_size() > MAX_UNSENT:
            keep_alive = False  # it does not read what it asked for
        if not keep_alive:
            self._closing = True
            transport.close()

    def _fail(self, status: int, description: str) -> None:
        """Answer a request that could not be parsed, then close the connection."""
        started = time.perf_counter()
        self._queue.clear()
        response = _error(status, description)
        self._metrics.observe("other", "bad_request", time.perf_counter() - started)
        self._write(response, keep_alive=False)

    def _arm_idle(self) -> None:
        """Note activity; one timer per connection checks it (no timer per request)."""
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(IDLE_TIMEOUT_S, self._idle_check)

    def _idle_check(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_active
        if quiet >= IDLE_TIMEOUT_S and not self._queue and self._transport is not None:
            self._closing = True
            self._transport.close()
            return
        self._idle = loop.call_later(max(0.1, IDLE_TIMEOUT_S - quiet), self._idle_check)
