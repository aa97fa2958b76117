"""Real traffic for the watch's tests: regions' Redis fed through the real apply path,
validators recording usage per client, and the worker's forwarding (drain, sign) up to
the store's verification, without Kafka (the pipeline test covers the topic)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from producer.records import IssuedToken
from producer.usage import merge_reports
from shared.events import TokenOp
from shared.keys import RedisKeys
from shared.usage import (
    CLIENT,
    DRAIN_SCRIPT,
    SignedUsageRecord,
    UsageReport,
    client_fingerprint,
    encode_usage_reports,
    parse_drained_detail,
)
from shared.validator import Outcome, Validator
from tests.kafka_helpers import KEYRING
from tests.region_helpers import RegionFixture, now_ms

__all__ = ["Receiver", "Traffic", "receiving"]

CURL = ("198.51.100.7", "curl/8.5.0")
BROWSER = ("203.0.113.9", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")


class Traffic:
    """Two (or more) regions with validators that record usage, as services run them."""

    def __init__(self, region_urls: dict[str, str], regions: tuple[str, ...] = ("eu", "us")):
        self.keys = RedisKeys()
        self.urls = {name: region_urls[name] for name in regions}
        self.regions = {name: RegionFixture(url, self.keys) for name, url in self.urls.items()}
        for fixture in self.regions.values():
            fixture.beat()
        self.validators = {
            name: Validator.from_url(url, keys=self.keys) for name, url in self.urls.items()
        }
        for validator in self.validators.values():
            validator.enable_usage(interval_s=3600)  # flushed by forward(), not by a timer

    def put(
        self, issued: IssuedToken, op: TokenOp = TokenOp.ISSUED, expires_at: int | None = None
    ) -> None:
        """The token in every region, as the worker would have applied it."""
        secret = issued.plain_text_token.split("|", 1)[1]
        for fixture in self.regions.values():
            fixture.beat()
            fixture.token(
                secret,
                token_id=issued.id,
                owner=str(issued.tokenable_id),
                op=op,
                abilities=tuple(issued.abilities),
                expires_at=expires_at,
            )

    def present(
        self,
        region: str,
        token: str,
        times: int = 1,
        client: tuple[str, str] = CURL,
        abilities: tuple[str, ...] = (),
    ) -> list[Outcome]:
        """``times`` validations of ``token`` in ``region`` by ``client`` (IP, user agent)."""
        mark = CLIENT.set(client_fingerprint(*client))
        try:
            validator = self.validators[region]
            return [validator.validate(token, abilities).outcome for _ in range(times)]
        finally:
            CLIENT.reset(mark)

    def forward(self) -> list[UsageReport]:
        """Flush every validator, drain every region as its worker does, sign, and verify
        as the store does: the reports the store accepts."""
        records = []
        for name, validator in self.validators.items():
            assert validator.usage is not None
            validator.usage.flush()
            client = redis.Redis.from_url(self.urls[name])
            try:
                drained = client.register_script(DRAIN_SCRIPT)(
                    keys=[self.keys.usage, self.keys.usage_counts]
                )
            finally:
                client.close()
            usage, counts, invalid = parse_drained_detail(drained)
            for key, value, headers in encode_usage_reports(
                name, usage, now_ms(), KEYRING, tokens=counts, invalid=invalid
            ):
                records.append(SignedUsageRecord(key, value, tuple(headers)))
        accepted: list[UsageReport] = []
        merge_reports(records, KEYRING, now_ms(), accepted)
        return accepted

    def close(self) -> None:
        for validator in self.validators.values():
            validator.close()


@dataclass
class Receiver:
    """A webhook receiver: what it got, and how many first requests it fails with 503."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""

    def wait(self, count: int, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, f"{len(self.received)} of {count} deliveries"


@contextmanager
def receiving(fail_first: int = 0) -> Iterator[Receiver]:
    """A real HTTP server on a free port that records every POST."""
    receiver = Receiver(fail_first)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.attempts += 1
            if receiver.attempts <= receiver.fail_first:
                self.send_response(503)
                self.end_headers()
                return
            receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tokensync"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
