"""The watch's pure parts: settings parsed once with clear errors, the usage report's
counts on the wire, the fingerprint, the webhook signature."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producer.detectors.settings import Detector, Reaction, WatchSettings
from producer.detectors.webhook import sign, verify
from producer.usage import merge_reports
from shared.errors import ConfigError
from shared.usage import (
    MAX_COUNTED_TOKENS,
    InvalidUse,
    SignedUsageRecord,
    TokenUse,
    client_fingerprint,
    decode_usage_report,
    encode_usage_reports,
    proxied_client,
)
from tests.kafka_helpers import KEYRING

NOW = 1_800_000_000_000


def test_the_watch_settings_default_to_every_detector_on_and_alerting() -> None:
    settings = WatchSettings.from_env({})
    assert all(settings[d].enabled for d in Detector)
    assert {Reaction.ALERT} == {settings[d].reaction for d in Detector}
    assert (300.0, 2) == (
        settings[Detector.MULTI_REGION].window_s,
        settings[Detector.MULTI_REGION].threshold,
    )
    assert 7 * 86400.0 == settings.window_s
    assert settings.webhook_url is None


def test_the_watch_settings_parse_each_detector_from_the_environment() -> None:
    settings = WatchSettings.from_env(
        {
            "TOKENSYNC_DETECT_DORMANT": "off",
            "TOKENSYNC_DETECT_MULTI_REGION_WINDOW": "2m",
            "TOKENSYNC_DETECT_MULTI_REGION_THRESHOLD": "3",
            "TOKENSYNC_DETECT_MULTI_REGION_REACTION": "revoke-token",
            "TOKENSYNC_DETECT_INVALID_BURST_REGION_THRESHOLD": "500",
            "TOKENSYNC_USAGE_WINDOW": "2d",
            "TOKENSYNC_WEBHOOK_URL": "https://hooks.example/tokensync",
            "TOKENSYNC_WEBHOOK_SECRET": "sixteen chars at least",
        }
    )
    assert not settings[Detector.DORMANT].enabled
    multi = settings[Detector.MULTI_REGION]
    assert (120.0, 3, Reaction.REVOKE_TOKEN) == (multi.window_s, multi.threshold, multi.reaction)
    assert 500 == settings[Detector.INVALID_BURST].region_threshold
    assert 2 * 86400.0 == settings.window_s
    assert "sixteen" not in repr(settings), "the secret stays out of repr"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TOKENSYNC_DETECT_DORMANT": "maybe"}, "TOKENSYNC_DETECT_DORMANT must be on or off"),
        ({"TOKENSYNC_DETECT_DORMANT_REACTION": "nuke"}, "must be one of alert"),
        ({"TOKENSYNC_DETECT_INVALID_BURST_REACTION": "revoke-token"}, "may be alert"),
        ({"TOKENSYNC_DETECT_PRINCIPAL_JUMP_REACTION": "revoke-token"}, "revoke-principal"),
        ({"TOKENSYNC_DETECT_DORMANT_WINDOW": "soon"}, "not a duration"),
        ({"TOKENSYNC_DETECT_DORMANT_THRESHOLD": "0"}, "whole number from 1"),
        ({"TOKENSYNC_WEBHOOK_URL": "ftp://x"}, "http:// or https://"),
        ({"TOKENSYNC_WEBHOOK_URL": "https://x"}, "TOKENSYNC_WEBHOOK_SECRET"),
    ],
)
def test_bad_watch_settings_are_one_clear_config_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        WatchSettings.from_env(environ)


def _signed(records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> list[SignedUsageRecord]:
    return [SignedUsageRecord(k, v, tuple(h)) for k, v, h in records]


def test_counts_and_invalid_presentations_travel_signed_and_decode_as_sent() -> None:
    counts = {7: TokenUse({"198.51.100.0/24 curl": (3, 1, 0)}), 8: TokenUse({"": (0, 0, 2)})}
    invalid = [InvalidUse("198.51.100.0/24 curl", "0a1b2c3d", 4)]
    [record] = _signed(
        list(encode_usage_reports("eu", {7: NOW}, NOW, KEYRING, tokens=counts, invalid=invalid))
    )
    report = decode_usage_report(record, KEYRING)
    assert ({7: NOW}, counts, invalid) == (report.usage, dict(report.tokens), list(report.invalid))
    assert (4, 2) == (report.tokens[7].requests, report.tokens[8].denied)


def test_a_busy_interval_with_counts_is_split_into_records_of_at_most_the_counted_limit() -> None:
    usage = dict.fromkeys(range(1, MAX_COUNTED_TOKENS + 2), NOW)
    counts = {i: TokenUse({"": (1, 0, 0)}) for i in usage}
    records = _signed(list(encode_usage_reports("eu", usage, NOW, KEYRING, tokens=counts)))
    accepted: list[object] = []
    assert usage == merge_reports(records, KEYRING, NOW, accepted)  # type: ignore[arg-type]
    assert 2 == len(records) == len(accepted)


@pytest.mark.parametrize(
    "bad",
    [
        {"7": {"c": {"198.51.100.0/24 curl": [1, 2]}}},  # not [valid, forbidden, denied]
        {"7": {"c": {"Not|A fingerprint": [1, 0, 0]}}},
        {"7": {"c": {"x": [-1, 0, 0]}}},
        {"x": {"c": {}}},
    ],
)
def test_a_signed_report_with_malformed_counts_is_dropped_whole(bad: dict[str, object]) -> None:
    import orjson

    body = {"v": 1, "type": "usage", "region": "eu", "at": NOW, "usage": {"7": NOW}, "tokens": bad}
    value = orjson.dumps(body)
    record = SignedUsageRecord(b"eu", value, tuple(KEYRING.sign(b"eu", value)))
    assert {} == merge_reports([record], KEYRING, NOW)


@pytest.mark.parametrize(
    ("ip", "agent", "expected"),
    [
        ("198.51.100.7", "curl/8.5.0", "198.51.100.0/24 curl"),
        ("2001:db8:abcd:12::7", "python-requests/2.32", "2001:db8:abcd::/48 python-requests"),
        ("::ffff:203.0.113.9", "Mozilla/5.0 Chrome/126.0 Safari/537.36", "203.0.113.0/24 chrome"),
        (None, None, "- none"),
        ("not an address", "SomethingElse/1", "- other"),
    ],
)
def test_a_client_fingerprint_keeps_only_the_network_and_the_agent_family(
    ip: str | None, agent: str | None, expected: str
) -> None:
    assert expected == client_fingerprint(ip, agent)


def test_behind_a_proxy_the_client_is_x_real_ip_else_the_last_forwarded_hop() -> None:
    assert "192.0.2.0/24 none" == proxied_client(
        {"x-real-ip": "192.0.2.1", "x-forwarded-for": "10.0.0.1"}
    )
    assert "192.0.2.0/24 none" == proxied_client({"x-forwarded-for": "10.0.0.1, 192.0.2.1"})


def test_a_webhook_signature_verifies_only_with_the_secret_the_body_and_a_recent_time() -> None:
    body = b'{"event": "finding"}'
    header = sign(b"s" * 16, body, 1_800_000_000)
    assert verify(b"s" * 16, header, body, now_s=1_800_000_100)
    assert not verify(b"t" * 16, header, body, now_s=1_800_000_100)
    assert not verify(b"s" * 16, header, body + b" ", now_s=1_800_000_100)
    assert not verify(b"s" * 16, header, body, now_s=1_800_000_000 + 301), "a replay"
    assert not verify(b"s" * 16, "v1=deadbeef", body)


def test_every_watch_setting_is_a_known_setting_so_every_command_accepts_it() -> None:
    from shared.settings import Settings
    from shared.watch_names import WATCH_KNOWN

    environ = {f"TOKENSYNC_{name}": "" for name in WATCH_KNOWN}
    Settings.from_env(environ)  # no "unknown setting"
    WatchSettings.from_env(environ)  # empty means the default
    with pytest.raises(ConfigError, match="unknown setting TOKENSYNC_DETECT_DORMANT_REGION"):
        Settings.from_env({"TOKENSYNC_DETECT_DORMANT_REGION_THRESHOLD": "3"})


def test_the_relay_refuses_a_bad_watch_setting_in_one_line_before_connecting_anywhere(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env |= {"TOKENSYNC_DETECT_DORMANT_REACTION": "nuke", "TOKENSYNC_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "shared", "relay"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 != done.returncode
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert 1 == len(lines), lines
    assert "TOKENSYNC_DETECT_DORMANT_REACTION must be one of alert" in lines[0]
