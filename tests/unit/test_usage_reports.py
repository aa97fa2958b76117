"""Usage reports with values alone: what the store applies and what it drops, and why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from producer.usage import merge_reports
from shared.events import Keyring
from shared.usage import MAX_REPORT_TOKENS, SignedUsageRecord, encode_usage_reports

KEYRING = Keyring({"k": b"k" * 32}, "k")
NOW = 1_800_000_000_000


def signed(body: dict[str, Any], key: bytes = b"eu") -> SignedUsageRecord:
    value = orjson.dumps(body)
    return SignedUsageRecord(key, value, tuple(KEYRING.sign(key, value)))


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("tokensync_usage_reports_total", {"outcome": outcome}) or 0.0


def test_a_genuine_report_in_several_records_merges_to_the_newest_use_per_token() -> None:
    usage = {i: NOW - i for i in range(1, MAX_REPORT_TOKENS + 6)}
    records = [
        SignedUsageRecord(k, v, tuple(h))
        for k, v, h in encode_usage_reports("eu", usage, NOW, KEYRING)
    ]
    older = [
        SignedUsageRecord(k, v, tuple(h))
        for k, v, h in encode_usage_reports("us", {1: NOW - 50}, NOW, KEYRING)
    ]
    assert 2 == len(records)
    assert usage == merge_reports([*older, *records], KEYRING, NOW)


GOOD = {"v": 1, "type": "usage", "region": "eu", "at": NOW, "usage": {"7": NOW}}


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({**GOOD, "region": "us"}, b"eu"),  # the key (region) does not match the report
        ({**GOOD, "v": 2}, b"eu"),
        ({**GOOD, "type": "token"}, b"eu"),
        ({**GOOD, "usage": {"7": True}}, b"eu"),
        ({**GOOD, "usage": {"7": -1}}, b"eu"),
        ({**GOOD, "usage": {"7": 1.5}}, b"eu"),
        ({**GOOD, "usage": {"x7": NOW}}, b"eu"),
        ({**GOOD, "usage": {"0": NOW}}, b"eu"),
        ({**GOOD, "usage": {"9" * 30: NOW}}, b"eu"),
        ({**GOOD, "usage": [7, NOW]}, b"eu"),
        ({**GOOD, "usage": {str(i): NOW for i in range(1, MAX_REPORT_TOKENS + 2)}}, b"eu"),
    ],
)
def test_a_signed_report_of_the_wrong_shape_is_dropped_as_malformed(
    body: dict[str, Any], key: bytes
) -> None:
    before = count("malformed")
    assert {} == merge_reports([signed(body, key)], KEYRING, NOW)
    assert 1 == count("malformed") - before


def test_a_use_in_the_future_beyond_the_allowance_drops_the_report_as_out_of_range() -> None:
    before = count("out_of_range")
    late = signed({**GOOD, "usage": {"7": NOW, "8": NOW + 11 * 60 * 1000}})
    near = signed({**GOOD, "usage": {"9": NOW + 60 * 1000}})  # a validator clock a minute ahead
    assert {9: NOW + 60 * 1000} == merge_reports([late, near], KEYRING, NOW)
    assert 1 == count("out_of_range") - before
