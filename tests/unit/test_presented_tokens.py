"""Whatever a client presents, parsing answers (a token to look up, or malformed) and
never raises; an id part no BIGINT holds is malformed before any lookup."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.tokenformat import MAX_TOKEN_ID, checksum, hash_token, parse_presented

ENTROPY = "k" * 40
TOKEN = f"{ENTROPY}{checksum(ENTROPY)}"


@given(st.one_of(st.text(max_size=300), st.binary(max_size=60), st.integers(), st.none()))
def test_parsing_any_input_answers_without_raising(presented: object) -> None:
    parsed = parse_presented(presented)
    if parsed is not None:
        assert parsed.token_id is None or 0 <= parsed.token_id <= MAX_TOKEN_ID
        assert 64 == len(parsed.token_hash)


@given(st.integers(min_value=0, max_value=10**30))
def test_an_id_part_is_kept_exactly_when_a_bigint_holds_it(token_id: int) -> None:
    parsed = parse_presented(f"{token_id}|{TOKEN}")
    if token_id <= MAX_TOKEN_ID and len(str(token_id)) <= 19:
        assert parsed is not None and (token_id, hash_token(TOKEN)) == (
            parsed.token_id,
            parsed.token_hash,
        )
    else:
        assert parsed is None


def test_a_20_digit_id_and_non_ascii_digits_are_malformed() -> None:
    assert parse_presented(f"{'1' * 20}|{TOKEN}") is None
    assert parse_presented(f"{2**63}|{TOKEN}") is None
    assert parse_presented(f"٣|{TOKEN}") is None  # an Arabic-Indic digit: isdigit() but not ASCII
    assert parse_presented(f"{2**63 - 1}|{TOKEN}") is not None
