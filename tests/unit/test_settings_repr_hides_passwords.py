"""Review finding: a Settings or Region repr (a traceback with locals, a debug line, a
test failure) repeated the database's and the regions' Redis passwords."""

from __future__ import annotations

from shared.settings import Settings

ENV = {
    "TOKENSYNC_DATABASE_URL": "postgresql://app:db-s3cret@db.example:5432/app",
    "TOKENSYNC_REGIONS": "eu=redis://:redis-s3cret@eu.example:6379/0",
    "TOKENSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "TOKENSYNC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "TOKENSYNC_KAFKA_SASL_USERNAME": "relay",
    "TOKENSYNC_KAFKA_SASL_PASSWORD": "kafka-s3cret",
}


def test_the_settings_repr_shows_no_database_redis_or_kafka_password() -> None:
    shown = repr(Settings.from_env(ENV))
    for secret in ("db-s3cret", "redis-s3cret", "kafka-s3cret"):
        assert secret not in shown
    assert "db.example" in shown  # still says where it points
    assert "eu.example" in shown


def test_a_region_repr_shows_no_redis_password() -> None:
    (region,) = Settings.from_env(ENV).regions
    assert "redis-s3cret" not in repr(region)
    assert "eu.example" in repr(region)
