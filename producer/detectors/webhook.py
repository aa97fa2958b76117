"""Findings POSTed to a webhook: JSON, signed with HMAC-SHA256 over ``<t>.<body>`` in
``X-Tokensync-Signature: t=<unix seconds>,v1=<hex>``, retried with exponential backoff
from a thread of its own (the usage loop never waits for a receiver)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import orjson
import sqlalchemy as sa

from producer.detectors.findings import Finding
from producer.watch_tables import FINDINGS
from shared.logs import get_logger
from shared.metrics import WEBHOOK_DELIVERIES

__all__ = ["SIGNATURE_HEADER", "WebhookNotifier", "sign", "verify"]

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Tokensync-Signature"
_MAX_BACKOFF_S = 30.0


def sign(secret: bytes, body: bytes, at_s: int) -> str:
    """The signature header's value for ``body`` sent at ``at_s``."""
    mac = hmac.new(secret, f"{at_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at_s},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, *, now_s: float | None = None, tolerance_s: int = 300
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old
    (what a receiver checks; replays of old deliveries fail)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        at_s = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - at_s) > tolerance_s:
        return False
    expected = sign(secret, body, at_s).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookNotifier:
    """Delivers each finding once to ``url`` (a 2xx), up to ``attempts`` tries with
    exponential backoff (0.5 s, 1 s, 2 s, ... at most 30 s); the delivery time is stored
    on the finding."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        engine: sa.Engine | None = None,
        *,
        attempts: int = 6,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret
        self._engine = engine
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._queue: queue.Queue[Finding | None] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookNotifier:
        """Deliver in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the delivery in flight (what is queued stays in the findings table)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def send(self, finding: Finding) -> None:
        """Queue one finding for delivery (never blocks; a full queue drops and logs)."""
        try:
            self._queue.put_nowait(finding)
        except queue.Full:
            WEBHOOK_DELIVERIES.labels("failed").inc()
            log.error("finding_delivery_dropped", finding_id=finding.id, reason="queue full")

    def deliver(self, finding: Finding) -> bool:
        """Try until delivered or out of attempts; return whether it was delivered."""
        body = orjson.dumps({"event": "finding", "finding": finding.to_json()})
        for attempt in range(1, self._attempts + 1):
            status, error = self._post(body, finding)
            if status is not None and 200 <= status < 300:
                WEBHOOK_DELIVERIES.labels("delivered").inc()
                log.info("finding_delivered", finding_id=finding.id, attempt=attempt)
                self._mark(finding)
                return True
            if attempt == self._attempts:
                break
            WEBHOOK_DELIVERIES.labels("retried").inc()
            wait = min(self._backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            log.warning(
                "finding_delivery_retrying",
                finding_id=finding.id,
                attempt=attempt,
                status=status,
                error=error,
                retry_in_s=wait,
            )
            if self._stop.wait(wait):
                return False
        WEBHOOK_DELIVERIES.labels("failed").inc()
        log.error("finding_delivery_failed", finding_id=finding.id, attempts=self._attempts)
        return False

    def _post(self, body: bytes, finding: Finding) -> tuple[int | None, str | None]:
        request = urllib.request.Request(  # noqa: S310 - the operator's http(s) URL
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "tokensync-watch",
                "X-Tokensync-Event": "finding",
                "X-Tokensync-Delivery": str(finding.id),
                SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                return int(response.status), None
        except urllib.error.HTTPError as e:
            return e.code, None
        except (urllib.error.URLError, OSError, ValueError) as e:
            return None, str(getattr(e, "reason", e))[:200]

    def _mark(self, finding: Finding) -> None:
        if self._engine is None or finding.id is None:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    FINDINGS.update()
                    .where(FINDINGS.c.id == finding.id)
                    .values(delivered_at_ms=int(self._clock() * 1000))
                )
        except sa.exc.SQLAlchemyError as e:
            log.warning("finding_delivery_not_recorded", finding_id=finding.id, error=str(e))

    def _run(self) -> None:
        while not self._stop.is_set():
            finding = self._queue.get()
            if finding is None:
                return
            try:
                self.deliver(finding)
            except Exception:  # the loop boundary: one bad delivery stops no other
                log.exception("finding_delivery_crashed", finding_id=finding.id)
