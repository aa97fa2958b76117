"""Region keys (``shared.region_keys``): settings, what a worker signs with, what the
store believes, and the doctor's check."""

from __future__ import annotations

import base64

import pytest

from producer.doctor_region_keys import region_key_checks
from producer.doctor_report import Outcome
from producer.usage import merge_reports
from shared.errors import ConfigError, SignatureError
from shared.region_keys import CoSigned, RegionKey, RegionKeys, usage_signer
from shared.settings import Region, Settings
from shared.usage import SignedUsageRecord, encode_usage_reports
from tests.kafka_helpers import KEYRING

NOW = 1_700_000_000_000
EU_SECRET = b"eu-secret-0123456789abcdef"
US_SECRET = b"us-secret-0123456789abcdef"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def env(**values: str) -> dict[str, str]:
    return {f"TOKENSYNC_{k}": v for k, v in values.items()}


def test_region_keys_round_trip_through_the_environment_and_never_show_their_secrets() -> None:
    settings = Settings.from_env(
        env(
            REGION_KEY=f"eu-1:{b64(EU_SECRET)}",
            REGION_KEYS=f"eu=eu-1:{b64(EU_SECRET)},us=us-1:{b64(US_SECRET)},"
            f"us=us-2:{b64(US_SECRET * 2)}",
        )
    )
    assert settings.region_key == RegionKey("eu-1", EU_SECRET)
    assert ["us-1", "us-2"] == settings.region_keys.kids("us")
    assert settings == Settings.from_env(settings.to_env())
    shown = repr(settings) + repr(settings.region_keys) + repr(settings.region_key)
    for secret in (EU_SECRET, US_SECRET):
        assert b64(secret) not in shown and secret.decode() not in shown


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REGION_KEY", "no-colon", "KEY_ID:BASE64_SECRET"),
        ("REGION_KEY", "eu-1:not base64!", "not valid base64"),
        ("REGION_KEY", f"eu-1:{b64(b'short')}", "shorter than 16 bytes"),
        ("REGION_KEYS", f"eu-1:{b64(EU_SECRET)}", "REGION=KEY_ID:BASE64_SECRET"),
        ("REGION_KEYS", f"eu=k:{b64(EU_SECRET)},us=k:{b64(US_SECRET)}", "given to two regions"),
    ],
)
def test_a_bad_region_key_setting_is_one_clear_config_error_without_the_secret(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env(env(**{name: value}))
    assert b64(EU_SECRET) not in str(caught.value)


def test_a_worker_signs_with_its_own_key_else_its_entry_of_the_list_else_the_keyring() -> None:
    keys = RegionKeys({"eu": {"eu-1": EU_SECRET, "eu-2": EU_SECRET * 2}})
    own = RegionKey("mine", US_SECRET)
    assert CoSigned(KEYRING, own) == usage_signer(KEYRING, "eu", own, keys)
    assert CoSigned(KEYRING, RegionKey("eu-2", EU_SECRET * 2)) == usage_signer(
        KEYRING, "eu", None, keys
    )
    assert KEYRING is usage_signer(KEYRING, "us", None, keys)


def records(region: str, signer: object) -> list[SignedUsageRecord]:
    return [
        SignedUsageRecord(k, v, h)
        for k, v, h in encode_usage_reports(region, {7: NOW}, NOW, signer)  # type: ignore[arg-type]
    ]


def test_the_store_believes_a_region_key_only_for_its_own_region() -> None:
    eu = RegionKey("eu-1", EU_SECRET)
    keys = RegionKeys({"eu": {"eu-1": EU_SECRET}, "us": {"us-1": US_SECRET}})
    assert {7: NOW} == merge_reports(records("eu", CoSigned(KEYRING, eu)), KEYRING, NOW, None, keys)
    assert {} == merge_reports(records("us", CoSigned(KEYRING, eu)), KEYRING, NOW, None, keys)
    assert {} == merge_reports(records("us", KEYRING), KEYRING, NOW, None, keys)
    assert {7: NOW} == merge_reports(records("ap", KEYRING), KEYRING, NOW, None, keys)
    # before the store has region keys, the keyring's MAC beside a region's decides
    assert {7: NOW} == merge_reports(records("us", CoSigned(KEYRING, eu)), KEYRING, NOW)


def test_a_region_signature_altered_or_cut_in_half_is_refused() -> None:
    keys = RegionKeys({"eu": {"eu-1": EU_SECRET}})
    [record] = records("eu", RegionKey("eu-1", EU_SECRET))
    with pytest.raises(SignatureError, match="half"):
        keys.verify(record.key or b"", record.value or b"", record.headers[:1])
    with pytest.raises(SignatureError, match="does not match"):
        keys.verify(record.key or b"", (record.value or b"") + b" ", record.headers)
    assert "eu" == keys.verify(record.key or b"", record.value or b"", record.headers)


def test_doctor_warns_until_every_region_has_a_key_of_its_own() -> None:
    regions = [Region("eu", "redis://h:1/0"), Region("us", "redis://h:1/1")]
    [none] = region_key_checks(Settings(), regions)
    assert Outcome.WARN is none.outcome and "any region can claim" in none.detail
    partial = Settings(region_keys=RegionKeys({"eu": {"eu-1": EU_SECRET}}))
    [some] = region_key_checks(partial, regions)
    assert Outcome.WARN is some.outcome and "without a key of their own: us" in some.detail
    full = Settings(region_keys=RegionKeys({"eu": {"eu-1": EU_SECRET}, "us": {"u": US_SECRET}}))
    [every] = region_key_checks(full, regions)
    assert Outcome.PASS is every.outcome and "eu: eu-1, us: u" in every.detail
    assert b64(EU_SECRET) not in every.detail + some.detail
