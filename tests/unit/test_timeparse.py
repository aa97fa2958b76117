"""Times and durations people type: what is accepted, and what is a clear UsageError."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.errors import UsageError
from shared.timeparse import MAX_DURATION_S, parse_duration, parse_instant


def test_durations_up_to_a_hundred_years_are_seconds() -> None:
    assert (90.0, 0.25, 7 * 86400.0) == tuple(map(parse_duration, ["90s", "250ms", "7d"]))
    assert MAX_DURATION_S == parse_duration(f"{MAX_DURATION_S}")


@pytest.mark.parametrize("text", ["99999999999d", "9" * 400, f"{MAX_DURATION_S + 1}", "1e9"])
def test_a_duration_past_a_hundred_years_or_not_a_number_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", ["99999999999999", "9" * 400, "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"]
)
def test_an_instant_outside_the_years_1_to_9999_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="up to year 9999"):
        parse_instant(text)


def test_instants_are_aware_utc() -> None:
    assert parse_instant("now") is None
    assert dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC) == parse_instant("2026-11-29T13:00+01:00")
    assert dt.datetime(1970, 1, 1, 0, 1, tzinfo=dt.UTC) == parse_instant("60")
