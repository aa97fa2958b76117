"""`stack up` honours every TOKENSYNC_* setting of its environment (issue 21, item 4): each is
recorded in the settings file and reaches the stack's children (relay, API, workers, gates),
which run with exactly the settings the stack resolved (``child_environment``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from shared.settings import PREFIX, Region, Settings
from shared.settings_file import read_settings_file
from stack.pipeline import child_environment
from stack.stackfile import record_settings


def _key(fill: bytes) -> str:
    return base64.b64encode(fill * 32).decode()


#: A value other than the default for each setting, in groups that only make sense together.
SAMPLES: dict[str, dict[str, str]] = {
    "store": {"DATABASE_URL": "postgresql+psycopg://app:pw@127.0.0.1:5432/tokens"},
    "names": {"TOPIC_PREFIX": "acme", "REDIS_NAMESPACE": "acme", "PARTITIONS": "6"},
    "signing": {"SIGNING_KEYS": f"k1:{_key(b'a')},k2:{_key(b'b')}", "SIGNING_KEY_ID": "k2"},
    "sealed": {
        "SIGNING_MODE": "both",
        "SEAL_PUBLIC_KEYS": f"s1:{_key(b'c')}",
        "SEAL_KEYS_DIR": "/var/lib/tokensync/seal",
        "SEAL_WAIT": "2.5",
    },
    "timing": {
        "STALENESS_BUDGET": "7.5",
        "CLOCK_SKEW_ALLOWANCE": "0.5",
        "HEARTBEAT_INTERVAL": "0.25",
        "USAGE_INTERVAL": "3.0",
        "STAGE_TIMING": "true",
    },
    "logs": {"LOG_LEVEL": "debug", "LOG_FORMAT": "console"},
    "tokens": {"ADMIN_TOKEN": "1|" + "x" * 40, "TOKEN_PREFIX": "acme_", "TOKEN_EXPIRATION": "60"},
    "admin": {"ADMIN_TYPES": "tokensync,ops", "ALLOW_EVICTION": "true"},
    "zone": {"STORE_TIMEZONE": "Europe/Paris", "READ_FROM": "primary"},
    "server check": {"SERVER_CHECK_INTERVAL": "0.2"},
    "gates": {
        "GATE_CLIENTS": "nginx:0123456789abcdef0",
        "GATES": "eu=http://127.0.0.1:8181",
        "LINK_DELAYS": "eu=40ms",
    },
    "region keys": {"REGION_KEY": f"r0:{_key(b'd')}", "REGION_KEYS": f"eu=r1:{_key(b'e')}"},
    "kafka sasl": {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "relay",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_REPLICATION_FACTOR": "3",
        "KAFKA_MIN_INSYNC_REPLICAS": "2",
    },
    "kafka tls": {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": "{files}/ca.pem",
        "KAFKA_SSL_CERTFILE": "{files}/client.pem",
        "KAFKA_SSL_KEYFILE": "{files}/client.key",
    },
}
#: The relay's watch (producer/detectors/settings.py reads them from its own environment).
WATCH_SAMPLES: dict[str, str] = {
    "USAGE_WINDOW": "2h",
    "WEBHOOK_URL": "http://127.0.0.1:9/hook",
    "WEBHOOK_SECRET": "0123456789abcdef0123",
    "WEBHOOK_ATTEMPTS": "3",
    "DETECT_DORMANT": "off",
    "DETECT_MULTI_REGION_WINDOW": "10m",
    "DETECT_PRINCIPAL_JUMP_THRESHOLD": "5",
    "DETECT_INVALID_BURST_REGION_THRESHOLD": "50",
    "DETECT_AFTER_ROTATION_REACTION": "revoke-token",
}
#: The endpoints the stack runs itself (it chooses them), and where its own files are.
NOT_PASSED_ON = {"KAFKA_BOOTSTRAP", "REGIONS", "API_URL", "STATE_DIR", "SETTINGS_FILE"}


def _stack_up(tmp_path: Path, given: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """What `stack up` with ``given`` in its environment records, and its children get."""
    environ = {PREFIX + k: v.replace("{files}", str(tmp_path)) for k, v in given.items()}
    path = tmp_path / ".tokensync" / "settings.env"
    path.parent.mkdir()
    settings = record_settings(
        path,
        environ,
        Settings.from_env(environ),
        state_dir=path.parent,
        kafka_port=9092,
        regions=[Region("eu", "redis://127.0.0.1:6379/0")],
        api_port=8080,
    )
    return read_settings_file(path), child_environment(settings)


def test_every_known_setting_has_a_sample_here() -> None:
    """A setting added later must be checked for the children too: give it a sample."""
    sampled = {k for group in SAMPLES.values() for k in group} | set(WATCH_SAMPLES)
    watch_known = {k for k in Settings.KNOWN if k.startswith(("DETECT_", "WEBHOOK_", "USAGE_W"))}
    assert set(Settings.KNOWN) - NOT_PASSED_ON - watch_known <= sampled
    assert set(Settings.KNOWN) - NOT_PASSED_ON - sampled <= watch_known


@pytest.mark.parametrize("group", list(SAMPLES))
def test_a_setting_in_stack_ups_environment_is_recorded_and_reaches_its_children(
    group: str, tmp_path: Path
) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    given = SAMPLES[group]
    recorded, child = _stack_up(tmp_path, given)
    for key in given:
        assert PREFIX + key in recorded, key
        assert PREFIX + key in child, key
    expected = Settings.from_env(
        {PREFIX + k: v.replace("{files}", str(tmp_path)) for k, v in given.items()}
    )
    got = Settings.from_env(child)
    for key in given:  # the child reads back what the environment said
        assert expected.to_env().get(PREFIX + key) == got.to_env().get(PREFIX + key), key


def test_the_watch_settings_in_stack_ups_environment_reach_the_relay(tmp_path: Path) -> None:
    from producer.detectors.settings import WatchSettings

    recorded, child = _stack_up(tmp_path, WATCH_SAMPLES)
    assert all(PREFIX + k in recorded for k in WATCH_SAMPLES)  # recorded: yes
    given = {PREFIX + k: v for k, v in WATCH_SAMPLES.items()}
    assert WatchSettings.from_env(given) == WatchSettings.from_env(child)
