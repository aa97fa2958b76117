"""The client fingerprint where the request is known: the ASGI middleware (the peer
address) and the gate (the proxy's X-Real-IP or last X-Forwarded-For hop), both with the
user-agent family, counted in the region's usage hash; never an address in full."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import redis

from examples.orders_service import build
from shared.keys import RedisKeys
from shared.tokenformat import checksum
from shared.validator import AsyncValidator, Policy
from tests.gate_helpers import running_gate
from tests.http_helpers import serving
from tests.kafka_helpers import wait_for
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration
BODY = "R" * 40
READER = f"1|{BODY}{checksum(BODY)}"
UNKNOWN_BODY = "U" * 40
UNKNOWN = f"{UNKNOWN_BODY}{checksum(UNKNOWN_BODY)}"
PREFIX = hashlib.sha256(UNKNOWN.encode()).hexdigest()[:8]


def _counts(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        raw = client.hgetall(RedisKeys().usage_counts)
    finally:
        client.close()
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def _region(url: str) -> None:
    fixture = RegionFixture(url)
    fixture.beat()
    fixture.token(f"{BODY}{checksum(BODY)}", token_id=1, abilities=("orders:read",))


def test_the_middleware_counts_uses_per_peer_network_and_agent_family(redis_url: str) -> None:
    _region(redis_url)
    validator = AsyncValidator.from_url(redis_url, policy=Policy(staleness_budget_s=5))
    recorder = validator.enable_usage(interval_s=3600)
    with serving(build(validator)) as url, httpx.Client(base_url=url) as http:
        for token in (READER, READER, UNKNOWN):
            http.get(
                "/orders",
                headers={"Authorization": f"Bearer {token}", "User-Agent": "curl/8.5.0"},
            )
    recorder.flush()
    assert {"v|1|127.0.0.0/24 curl": 2, f"i|127.0.0.0/24 curl|{PREFIX}": 1} == _counts(redis_url)


def test_the_gate_counts_uses_per_forwarded_client_network_and_agent_family(
    tmp_path: Path, redis_url: str
) -> None:
    _region(redis_url)
    headers = {
        "X-Forwarded-For": "10.1.2.3, 2001:db8:abcd:12::7",
        "User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Safari/605.1.15",
    }
    with running_gate(tmp_path, redis_url) as url, httpx.Client(base_url=url) as gate:
        assert (
            200
            == gate.get(
                "/auth", headers={**headers, "Authorization": f"Bearer {READER}"}
            ).status_code
        )
        assert (
            401
            == gate.get(
                "/auth", headers={**headers, "Authorization": f"Bearer {UNKNOWN}"}
            ).status_code
        )
        expected = {
            "v|1|2001:db8:abcd::/48 safari": 1,
            f"i|2001:db8:abcd::/48 safari|{PREFIX}": 1,
        }
        wait_for(lambda: expected == _counts(redis_url), 20, "the gate's usage flushed")
