"""The unit tier's ``MemoryRegion`` answers exactly as ``validate.lua`` does on a real Redis,
state for state (regions written through the worker's own apply path)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from shared.events import GLOBAL_SCOPE, TokenOp, ability_scope, principal_scope
from shared.keys import RedisKeys
from shared.tokenformat import checksum, hash_token
from tests.region_helpers import USER, RegionFixture, now_ms
from tests.unit.fakes import VALIDATE_LUA, MemoryRegion

pytestmark = pytest.mark.integration

UUID = "9F1C2D3E-4B5A-4C6D-8E7F-0A1B2C3D4E5F"


def plain(letter: str) -> str:
    return f"{letter * 40}{checksum(letter * 40)}"


def _copy(client: redis.Redis, keys: RedisKeys) -> MemoryRegion:
    """Every hash of the real region, into a MemoryRegion."""
    region = MemoryRegion(keys)
    for key in client.scan_iter("*"):
        if client.type(key) == b"hash":
            stored: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            region.hashes[key.decode()] = stored
    return region


def _both(client: redis.Redis, keys: RedisKeys, token_key: str) -> tuple[Any, Any]:
    script = client.register_script(VALIDATE_LUA)
    real = script(keys=[token_key, keys.meta, keys.epochs, keys.partitions])
    fake = _copy(client, keys).validate_reply(token_key, keys.meta, keys.epochs, keys.partitions)
    return real, fake


def test_the_memory_region_answers_like_validate_lua_on_a_real_redis(redis_url: str) -> None:
    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    try:
        fixture = RegionFixture(redis_url, keys)
        tokens = {plain(c): c for c in "abcdefgh"}
        unknown = keys.token(hash_token(plain("z")))
        # an empty region: not ready, no heartbeat, no token
        real, fake = _both(client, keys, unknown)
        assert real == fake
        fixture.beat()
        fixture.token(plain("a"), token_id=1)
        fixture.token(plain("b"), token_id=2, abilities=("orders:read", "x"))
        fixture.token(plain("c"), token_id=3, op=TokenOp.REVOKED)
        fixture.token(plain("d"), token_id=4, expires_at=now_ms() + 60_000)
        fixture.token(plain("e"), token_id=5, owner=UUID, abilities=())
        fixture.token(plain("f"), token_id=6, owner="7", abilities=("*",))
        fixture.epoch(ability_scope("orders:read"), now_ms())
        fixture.epoch(principal_scope(USER, UUID), now_ms())
        fixture.epoch(principal_scope(USER, "7"), now_ms() - 60_000)
        for text in [*tokens, plain("z")]:
            key = keys.token(hash_token(text))
            real, fake = _both(client, keys, key)
            assert real == fake, text
        fixture.epoch(GLOBAL_SCOPE, now_ms())
        for text in tokens:
            key = keys.token(hash_token(text))
            assert _both(client, keys, key)[0] == _both(client, keys, key)[1], text
        # the partitions hash lost its presence marker: incomplete (-1)
        client.hdel(keys.partitions, "~present")
        real, fake = _both(client, keys, keys.token(hash_token(plain("a"))))
        assert -1 == real[0] and real == fake
        client.hset(keys.partitions, "~present", "1")
        real, fake = _both(client, keys, keys.token(hash_token(plain("a"))))
        assert 1 == real[0] and real == fake
        # the epochs hash lost its presence marker: incomplete (-1)
        client.hdel(keys.epochs, "~present")
        real, fake = _both(client, keys, keys.token(hash_token(plain("a"))))
        assert -1 == real[0] and real == fake
    finally:
        client.close()
