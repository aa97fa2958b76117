"""Every Kafka client authenticates: the relay (and its usage reader), a region's worker and
the admin client run against a SASL_PLAINTEXT SCRAM-SHA-512 listener, and a revoked token
is denied in the region; a wrong password is one clear line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.kafka_io import KafkaAdmin
from shared.errors import PublishError
from shared.kafka_client import KafkaClientConfig
from shared.keys import Topics
from stack.kafka import KafkaBroker, KafkaJars, default_cache_dir
from stack.pipeline import tokensync_argv
from stack.process import free_port, stop_pid
from tests.harness import Pipeline, pipeline_context
from tests.integration.test_kafka_cluster import revoke_and_see_denied
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration
PASSWORD = "scram-secret-0123456789"
SCRAM = KafkaClientConfig(
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="tokensync",
    sasl_password=PASSWORD,
)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker whose clients' listener is SASL_PLAINTEXT with one SCRAM-SHA-512 user."""
    jars = KafkaJars(default_cache_dir())
    if not jars.present:
        pytest.skip("Kafka jars are not cached (tokensync stack up fetches them)")
    broker = KafkaBroker(
        jars,
        tmp_path_factory.mktemp("sasl") / "kafka",
        free_port(),
        free_port(),
        "256m",
        min_heap="128m",
        sasl_port=free_port(),
        sasl_users=(("SCRAM-SHA-512", SCRAM.sasl_username, PASSWORD),),
    )
    record = broker.start()
    try:
        broker.wait_ready(record)
        yield broker
    finally:
        stop_pid(record.pid, record.argv[0])


@pytest.fixture
def sasl_pipeline(
    sasl_broker: KafkaBroker, tmp_path: Path, sqlite_url: str, topics: Topics, redis_url: str
) -> Iterator[Pipeline]:
    pipeline = Pipeline(tmp_path, sasl_broker.sasl_bootstrap, sqlite_url, topics, {"eu": redis_url})
    pipeline.settings = pipeline.settings.with_overrides(kafka_client=SCRAM)
    yield from pipeline_context(pipeline)


def test_the_relay_a_worker_and_usage_run_over_scram_and_a_revoked_token_is_denied(
    sasl_pipeline: Pipeline, topics: Topics
) -> None:
    pipeline = sasl_pipeline
    pipeline.start_relay_process()  # the relay command: publisher, admin and usage reader
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    revoke_and_see_denied(pipeline)
    records = read_topic(pipeline.settings.kafka_bootstrap, topics.tokens, expect=2, client=SCRAM)
    assert len(records) >= 2  # the grant and the revocation, at least
    relay_log = (pipeline.tmp_path / "relay.log").read_text(errors="replace")
    assert PASSWORD not in relay_log
    assert PASSWORD not in pipeline.worker_log("eu")


@pytest.mark.parametrize("command", [["relay"], ["worker", "--region", "eu"]])
def test_a_wrong_password_is_one_clear_line_and_a_non_zero_exit(
    sasl_pipeline: Pipeline, command: list[str]
) -> None:
    pipeline = sasl_pipeline
    env = pipeline.env() | {"TOKENSYNC_KAFKA_SASL_PASSWORD": "wrong-password-000"}
    done = subprocess.run(
        tokensync_argv(command),
        env=env,
        cwd=pipeline.tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 != done.returncode
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tokensync: ")]
    assert 1 == len(errors), lines
    assert "authentication failed" in errors[0], lines
    assert "SASL_PLAINTEXT SCRAM-SHA-512 as tokensync" in errors[0], lines
    if command == ["relay"]:
        assert [errors[0]] == lines  # nothing else: no library log lines
    assert "wrong-password-000" not in done.stderr + done.stdout


def test_an_admin_client_refused_by_the_cluster_says_authentication_failed(
    sasl_broker: KafkaBroker,
) -> None:
    wrong = dataclasses.replace(SCRAM, sasl_password="wrong-password-000")
    with pytest.raises(PublishError) as error:
        KafkaAdmin(sasl_broker.sasl_bootstrap, timeout_s=3, client=wrong)
    message = str(error.value)
    assert "authentication failed" in message
    assert "SCRAM-SHA-512 as tokensync" in message
    assert "wrong-password-000" not in message
    assert "\n" not in message
