"""Review of ``tokensync doctor`` against a SASL cluster that refuses its password: the
Kafka check fails naming the refused login, the password appears nowhere, and no
library log line or traceback reaches the screen."""

from __future__ import annotations

import subprocess

import pytest

from stack.pipeline import tokensync_argv
from tests.harness import Pipeline
from tests.integration.test_kafka_sasl import sasl_broker, sasl_pipeline

pytestmark = pytest.mark.integration
__all__ = ["sasl_broker", "sasl_pipeline"]  # the SASL broker and pipeline fixtures
WRONG = "wrong-password-000"


def test_doctor_with_a_wrong_kafka_password_fails_its_kafka_check_in_one_line(
    sasl_pipeline: Pipeline,
) -> None:
    pipeline = sasl_pipeline
    env = pipeline.env() | {"TOKENSYNC_KAFKA_SASL_PASSWORD": WRONG}
    done = subprocess.run(
        tokensync_argv(["doctor"]),
        env=env,
        cwd=pipeline.tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    shown = done.stdout + done.stderr
    assert 0 != done.returncode
    assert WRONG not in shown
    assert "Traceback" not in shown
    kafka = [line for line in shown.splitlines() if "kafka" in line.lower()]
    assert any("authentication failed" in line for line in kafka), shown
    assert not [line for line in done.stderr.splitlines() if line.strip()], done.stderr
