"""Hostile input never gets past the token-shape check, and never reaches Redis."""

from __future__ import annotations

from unittest import mock

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.tokenformat import checksum, parse_presented
from shared.validator import Outcome, Validator

hostile = st.one_of(
    st.text(max_size=2000),
    st.text(alphabet="|\x00 \t\n", max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.from_regex(r"\A[0-9]{0,25}\|[A-Za-z0-9|]{0,120}\Z"),
    st.text(min_size=40, max_size=60, alphabet=st.characters(min_codepoint=0x80)),
    st.integers().map(str),
    st.just("9" * 5000),
)


def _offline_validator() -> Validator:
    """A validator whose Redis fails the test if it is ever called."""
    client = mock.Mock(spec=redis.Redis)
    called = AssertionError("Redis was called")
    client.register_script.return_value = mock.Mock(side_effect=called)
    client.evalsha.side_effect = called
    return Validator(client)


OFFLINE = _offline_validator()


@given(hostile)
@settings(max_examples=500)
def test_random_and_hostile_strings_are_invalid_without_a_redis_call(text: str) -> None:
    validator = OFFLINE
    if parse_presented(text) is None:
        result = validator.validate(text)
        assert (Outcome.INVALID, "malformed") == (result.outcome, result.reason)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_non_strings_are_invalid(value: object) -> None:
    assert Outcome.INVALID == OFFLINE.validate(value).outcome


@given(st.text(alphabet="abcXYZ019", min_size=40, max_size=40))
def test_any_alphanumeric_entropy_with_its_checksum_is_well_formed(entropy: str) -> None:
    assert parse_presented(f"{entropy}{checksum(entropy)}") is not None
    assert parse_presented(f"{entropy}{'0' * 8}") is None or checksum(entropy) == "0" * 8
