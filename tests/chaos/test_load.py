"""Several validator processes at full speed while tokens are issued and revoked: once a
receipt says a region enforced a revocation, no validator there may answer valid."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from pathlib import Path

import pytest

from producer.receipts import wait_for_receipt
from shared.keys import RedisKeys
from shared.validator import Outcome, Validator
from tests.harness import Pipeline

pytestmark = pytest.mark.chaos
USER = "App\\Models\\User"


def _validate_hard(url: str, namespace: str, tokens: list[str], seconds: float, out: str) -> None:
    """One validator process: cycle through the tokens; log every 'valid' with its time."""
    validator = Validator.from_url(url, keys=RedisKeys(namespace))
    valid: list[tuple[int, float]] = []
    calls = errors = 0
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        i = (i + 1) % len(tokens)
        outcome = validator.validate(tokens[i]).outcome
        calls += 1
        if outcome is Outcome.VALID:
            valid.append((i, time.time()))
        elif outcome is Outcome.UNAVAILABLE:
            errors += 1
    validator.close()
    Path(out).write_text(json.dumps({"calls": calls, "errors": errors, "valid": valid}))


def test_no_validator_accepts_a_token_after_its_region_enforced_the_revocation(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.start_relay()
    regions = ("eu", "us")
    for region in regions:
        pipeline.start_worker(region)
    for region in regions:
        pipeline.wait_ready(region)
    issued = [pipeline.store.issue(USER, i, "load") for i in range(150)]
    pipeline.wait_applied(issued[-1].seq)
    tokens = [t.plain_text_token for t in issued]

    seconds = 12.0
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for n, region in enumerate([r for r in regions for _ in range(2)]):  # two per region
        out = str(tmp_path / f"validator-{n}-{region}.json")
        proc = ctx.Process(
            target=_validate_hard,
            args=(
                pipeline.settings.region(region).redis_url,
                pipeline.settings.redis_namespace,
                tokens,
                seconds,
                out,
            ),
        )
        proc.start()
        procs.append((proc, region, out))
    time.sleep(1.0)
    enforced: dict[str, dict[int, float]] = {r: {} for r in regions}  # region -> index -> time
    rng = random.Random(5)
    victims = rng.sample(range(len(issued)), 60)
    began = time.time()
    for index in victims:
        mutation = pipeline.store.revoke_token(issued[index].id)
        receipt = wait_for_receipt(
            pipeline.settings,
            pipeline.store,
            mutation.seq,
            timeout_s=10,
            regions=[pipeline.settings.region(r) for r in regions],
        )
        observed = time.time()
        assert receipt.complete, receipt.summary()
        for r in receipt.regions:
            enforced[r.region][index] = observed
        pipeline.store.issue(USER, 1000 + index, "churn")  # keep issuing meanwhile
        time.sleep(rng.uniform(0, 0.1))
        if time.time() - began > seconds - 3:
            break
    for proc, _, _ in procs:
        proc.join(seconds + 30)

    false_accepts, calls, errors = [], 0, 0
    for _, region, out in procs:
        result = json.loads(Path(out).read_text())
        calls += result["calls"]
        errors += result["errors"]
        for index, at in result["valid"]:
            if index in enforced[region] and at > enforced[region][index]:
                false_accepts.append((region, index, at - enforced[region][index]))
    print(
        f"load: {calls / seconds:.0f} validations/s over {len(procs)} processes, "
        f"{errors} unavailable, {len(enforced['eu'])} revocations checked, "
        f"false accepts {len(false_accepts)}"
    )
    assert [] == false_accepts
    assert calls > 1000
    assert 0 == errors
