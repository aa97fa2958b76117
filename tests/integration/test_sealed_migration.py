"""From HMAC to sealed events and through a key rotation, one step at a time, on real
Kafka and Redis: every step keeps every region applying, and a region bootstrapping at
the end (public keys only, the old key retired) holds every live token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.seal_keys import SealKeyDir
from shared.validator import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def keys_cli(pipeline: Pipeline, *argv: str) -> tuple[int, str]:
    from shared.cli import root

    env = {**pipeline.env(), "TOKENSYNC_LOG_LEVEL": "warning"}
    result = CliRunner().invoke(root, ["keys", *argv], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def valid_everywhere(pipeline: Pipeline, regions: list[str], tokens: list[str]) -> None:
    for name in regions:
        validator = pipeline.validator(name)
        try:
            outcomes = [validator.validate(t).outcome for t in tokens]
        finally:
            validator.close()
        assert [Outcome.VALID] * len(tokens) == outcomes, name


def restart_relay(pipeline: Pipeline, mode: str) -> None:
    pipeline.kill_relay_process()
    pipeline.settings = pipeline.settings.with_overrides(signing_mode=mode)
    pipeline.start_relay_process()


def restart_worker(pipeline: Pipeline, region: str, mode: str) -> None:
    pipeline.stop_worker(region)
    pipeline.settings = pipeline.settings.with_overrides(signing_mode=mode)
    pipeline.start_worker(region)


def test_each_step_from_hmac_to_sealed_and_through_a_rotation_keeps_every_region_applying(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    keys = SealKeyDir(tmp_path / "seal-keys")
    pipeline.settings = pipeline.settings.with_overrides(seal_keys_dir=keys.path, seal_wait_s=1.0)
    # step 0: hmac everywhere
    pipeline.start_relay_process()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    tokens = [pipeline.store.issue(USER, 1, "hmac era")]
    pipeline.wait_applied(tokens[-1].seq)

    # step 1: a seal key; the relay emits HMAC and seals; the hmac worker skips the seals
    assert keys_cli(pipeline, "generate")[0] == 0
    restart_relay(pipeline, "both")
    tokens.append(pipeline.store.issue(USER, 1, "both"))
    pipeline.wait_applied(tokens[-1].seq)
    valid_everywhere(pipeline, ["eu"], [t.plain_text_token for t in tokens])

    # step 2: workers accept either; what only the HMAC vouches for is re-sealed
    restart_worker(pipeline, "eu", "both")
    code, out = keys_cli(pipeline, "reseal", "--json")
    assert code == 0 and json.loads(out)["resealed"] >= 1, out

    # step 3: the relay seals only; a new region in sealed mode bootstraps everything
    restart_relay(pipeline, "sealed")
    tokens.append(pipeline.store.issue(USER, 1, "sealed"))
    pipeline.settings = pipeline.settings.with_overrides(signing_mode="sealed")
    pipeline.start_worker("us")
    pipeline.wait_ready("us")
    pipeline.wait_applied(tokens[-1].seq)
    valid_everywhere(pipeline, ["eu", "us"], [t.plain_text_token for t in tokens])

    # step 4: rotation: a new key verifying everywhere, then active; both verify meanwhile
    old = keys.entries()[0].kid
    assert keys_cli(pipeline, "generate")[0] == 0
    for region in ("eu", "us"):
        restart_worker(pipeline, region, "sealed")  # they load both public keys
    assert keys_cli(pipeline, "rotate")[0] == 0
    restart_relay(pipeline, "sealed")
    tokens.append(pipeline.store.issue(USER, 1, "new key"))
    pipeline.wait_applied(tokens[-1].seq)
    valid_everywhere(pipeline, ["eu", "us"], [t.plain_text_token for t in tokens])

    # step 5: the old key still vouches for live records: retiring it is refused
    code, out = keys_cli(pipeline, "retire", old)
    assert code != 0 and "keys reseal first" in out, out
    from producer.doctor import run_checks

    warned = [
        c for c in run_checks(pipeline.settings, pipeline.store) if c.name == "sealed records"
    ]
    assert warned and "only an old key vouches for" in warned[0].detail

    # step 6: reseal, then retire; doctor is clean; a region bootstrapping now holds all
    code, out = keys_cli(pipeline, "reseal", "--json")
    assert code == 0 and json.loads(out)["resealed"] >= 3, out
    assert not [
        c for c in run_checks(pipeline.settings, pipeline.store) if c.name == "sealed records"
    ]
    assert keys_cli(pipeline, "retire", old)[0] == 0
    pipeline.start_worker("ap")
    pipeline.wait_ready("ap")
    pipeline.wait_applied(tokens[-1].seq)
    valid_everywhere(pipeline, ["eu", "us", "ap"], [t.plain_text_token for t in tokens])
    letters = read_topic(pipeline.settings.kafka_bootstrap, pipeline.topics.dead_letters)
    assert (
        []
        == [
            (
                dict(r.headers)["ts-dlq-region"],
                dict(r.headers)["ts-dlq-reason"],
                dict(r.headers)["ts-dlq-detail"],
                r.key,
            )
            for r in letters
        ][:6]
    )
