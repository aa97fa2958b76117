"""The synchronous twin an AsyncValidator's background threads use reaches the same server."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from shared.validator import _sync_twin


@pytest.mark.parametrize(
    "url,kind,expected",
    [
        ("redis://u:p@cache.eu:6390/2", redis.Connection, {"host": "cache.eu", "port": 6390}),
        (
            "rediss://u:p@cache.us:6380/3?ssl_cert_reqs=none",
            redis.SSLConnection,
            {"host": "cache.us", "port": 6380, "ssl_cert_reqs": "none"},
        ),
        (
            "unix:///run/redis.sock?db=4",
            redis.UnixDomainSocketConnection,
            {"path": "/run/redis.sock"},
        ),
    ],
)
def test_the_twin_keeps_address_database_credentials_and_tls(
    url: str, kind: type, expected: dict[str, object]
) -> None:
    twin = _sync_twin(aioredis.Redis.from_url(url))
    kwargs = twin.connection_pool.connection_kwargs
    assert twin.connection_pool.connection_class is kind
    assert expected.items() <= kwargs.items()
    assert kwargs["db"] == aioredis.Redis.from_url(url).connection_pool.connection_kwargs["db"]
    if "u:p@" in url:
        assert (kwargs["username"], kwargs["password"]) == ("u", "p")
