"""A region's token record grants what a JSON *list* of strings holds, as the token store
reads the same text (``producer.tokens.decode_abilities``): anything else grants nothing.
``apply.lua`` always writes a list, but a validator must not turn a JSON string into the
list of its characters (``"*"`` would become Sanctum's wildcard) or an object into its keys.
"""

from __future__ import annotations

import pytest
import redis

from producer.tokens import decode_abilities
from shared.keys import RedisKeys, TokenField
from shared.tokenformat import checksum, hash_token
from shared.validator import Outcome, Policy, Validator
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration

A = f"{'a' * 40}{checksum('a' * 40)}"

SPELLINGS = [
    '"*"',  # a JSON string, not a list
    '{"*": true}',  # an object whose key is the wildcard
    '{"0": "*"}',  # PHP's json_encode of a list with holes
    '"orders:write"',
    '[["*"]]',  # nested
    "[1, true, null]",  # non-strings
    "{}",  # cjson's spelling of an empty list
    '["orders:read", "orders:read"]',  # duplicates
    '["ORDERS:WRITE"]',  # case
]


@pytest.mark.parametrize("text", SPELLINGS)
def test_a_region_record_grants_only_what_its_ability_list_holds(redis_url: str, text: str) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(A, abilities=("orders:read",))
    client = redis.Redis.from_url(redis_url)
    client.hset(RedisKeys().token(hash_token(A)), TokenField.ABILITIES, text)
    client.close()
    validator = Validator.from_url(redis_url, policy=Policy(staleness_budget_s=30))
    try:
        result = validator.validate(A, ["orders:write"])
    finally:
        validator.close()
    store_grants = "*" in decode_abilities(text) or "orders:write" in decode_abilities(text)
    assert (Outcome.VALID if store_grants else Outcome.FORBIDDEN) == result.outcome
    assert result.principal is not None
    assert decode_abilities(text) == result.principal.abilities
