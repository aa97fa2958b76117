"""Kafka client security and replication settings: parsed once, one error line, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.kafka_client import KafkaClientConfig, replication_defaults
from shared.settings import Settings

SCRAM = {
    "TOKENSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "TOKENSYNC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "TOKENSYNC_KAFKA_SASL_USERNAME": "relay",
    "TOKENSYNC_KAFKA_SASL_PASSWORD": "s3cret-pa55word",
}


def test_security_settings_are_parsed_once_into_the_settings() -> None:
    settings = Settings.from_env(SCRAM)
    assert settings.kafka_client.security_protocol == "SASL_PLAINTEXT"
    assert settings.kafka_client.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_client.sasl_username == "relay"


def test_the_sasl_password_is_in_no_repr_and_no_description() -> None:
    settings = Settings.from_env(SCRAM)
    assert "s3cret-pa55word" not in repr(settings)
    assert "s3cret-pa55word" not in repr(settings.kafka_client)
    assert "s3cret-pa55word" not in settings.kafka_client.describe()


def test_security_settings_survive_the_child_environment() -> None:
    settings = Settings.from_env(SCRAM | {"TOKENSYNC_KAFKA_REPLICATION_FACTOR": "3"})
    again = Settings.from_env(settings.to_env())
    assert again.kafka_client == settings.kafka_client
    assert again.kafka_replication_factor == 3


def test_plaintext_is_the_default_and_adds_nothing_to_the_environment() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_client.security_protocol == "PLAINTEXT"
    assert not any("SECURITY" in k or "SASL" in k for k in settings.to_env())
    assert settings.kafka_client.faust_kwargs() == {}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"TOKENSYNC_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT"),
        (SCRAM | {"TOKENSYNC_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SASL_MECHANISM='GSSAPI'"),
        (SCRAM | {"TOKENSYNC_KAFKA_SASL_PASSWORD": ""}, "needs TOKENSYNC_KAFKA_SASL_USERNAME"),
        ({"TOKENSYNC_KAFKA_SASL_USERNAME": "relay"}, "need TOKENSYNC_KAFKA_SECURITY_PROTOCOL"),
        ({"TOKENSYNC_KAFKA_SSL_CAFILE": "/etc/ca.pem"}, "SSL_* settings need"),
        (
            {
                "TOKENSYNC_KAFKA_SECURITY_PROTOCOL": "SSL",
                "TOKENSYNC_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem",
            },
            "is not a readable file",
        ),
        (
            {
                "TOKENSYNC_KAFKA_SECURITY_PROTOCOL": "SSL",
                "TOKENSYNC_KAFKA_SSL_CERTFILE": "/nonexistent/c.pem",
            },
            "go together",
        ),
        ({"TOKENSYNC_KAFKA_REPLICATION_FACTOR": "three"}, "is not a whole number"),
        ({"TOKENSYNC_KAFKA_MIN_INSYNC_REPLICAS": "-1"}, "must be at least 1"),
    ],
)
def test_a_bad_kafka_setting_is_one_clear_line(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    message = str(error.value)
    assert says in message
    assert "\n" not in message
    assert "s3cret-pa55word" not in message


def test_kafka_python_gets_sasl_arguments() -> None:
    kwargs = Settings.from_env(SCRAM).kafka_client.kafka_python_kwargs()
    assert kwargs == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "relay",
        "sasl_plain_password": "s3cret-pa55word",
    }


def test_faust_gets_sasl_credentials_with_the_mechanism() -> None:
    credentials = Settings.from_env(SCRAM).kafka_client.faust_kwargs()["broker_credentials"]
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "relay"


def test_tls_builds_a_context_from_the_ca_file(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=test-ca",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(ca),
        ],
        check=True,
        capture_output=True,
    )
    config = KafkaClientConfig(security_protocol="SASL_SSL", **_sasl(), ssl_cafile=str(ca))
    assert config.kafka_python_kwargs()["ssl_cafile"] == str(ca)
    assert isinstance(config.aiokafka_kwargs()["ssl_context"], ssl.SSLContext)
    assert config.faust_kwargs()["broker_credentials"].protocol.value == "SASL_SSL"


def _sasl() -> dict[str, str]:
    return {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}


@pytest.mark.parametrize(
    ("brokers", "rf", "isr", "expected"),
    [(1, 0, 0, (1, 1)), (2, 0, 0, (2, 1)), (3, 0, 0, (3, 2)), (5, 0, 0, (3, 2)), (5, 5, 3, (5, 3))],
)
def test_replication_defaults_follow_the_cluster_size(
    brokers: int, rf: int, isr: int, expected: tuple[int, int]
) -> None:
    assert replication_defaults(brokers, rf, isr) == expected
