"""The synchronous validator's own connections (``shared.script_link``) under threads: one
validator shared by a thread pool gives every thread its own connection and every call its
own answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.events import TokenOp
from shared.tokenformat import checksum
from shared.validator import Outcome, Validator
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration


def test_one_validator_shared_by_eight_threads_answers_each_call_for_its_own_token(
    redis_url: str,
) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    tokens = {}
    for n in range(1, 41):
        plain = f"{n:040d}".replace("0", "x")
        plain += checksum(plain)
        region.token(plain, token_id=n, owner=str(n))
        tokens[n] = plain
    for n in range(1, 41, 2):
        region.token(tokens[n], token_id=n, op=TokenOp.REVOKED)
    validator = Validator.from_url(redis_url)

    def answer(n: int) -> tuple[int, Outcome, str | None]:
        result = validator.validate(f"{n}|{tokens[n]}")
        owner = result.principal.tokenable_id if result.principal else None
        return n, result.outcome, owner

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(answer, [n for _ in range(50) for n in tokens]))
    finally:
        validator.close()
    expected = [
        (n, Outcome.INVALID, None) if n % 2 else (n, Outcome.VALID, str(n))
        for _ in range(50)
        for n in tokens
    ]
    assert expected == answers
