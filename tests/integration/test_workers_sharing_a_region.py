"""Several worker processes of one region (one consumer group sharing its partitions), as
``tokensync bench apply --workers N`` runs them: every token ends as the store has it."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.harness import Pipeline
from tests.integration.test_workers import USER, issue_many
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration


def _ever_assigned(pipeline: Pipeline, name: str) -> set[int]:
    """Every partition a worker process was given at some point (from its JSON log)."""
    seen: set[int] = set()
    for line in pipeline.worker_log(name).splitlines():
        if '"partitions_assigned"' in line:
            seen |= set(json.loads(line)["partitions"])
    return seen


def test_two_workers_starting_together_on_an_empty_region_end_with_every_token_as_the_store_has_it(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    tokens = [pipeline.store.issue(USER, i, f"k{i}") for i in range(120)]
    issue_many(pipeline, 2000)
    # both processes start at once on the empty region: they race to build its cache
    pipeline.start_worker("eu", name="eu-a")
    pipeline.start_worker("eu", name="eu-b")
    last = 0
    for index, token in enumerate(tokens):  # revocations interleaved with new tokens
        if index % 2 == 0:
            last = pipeline.store.revoke_token(token.id).seq
        elif index % 3 == 0:
            last = pipeline.store.issue(USER, 1000 + index, f"late{index}").seq
    with pipeline.store.engine.begin() as conn:  # a bulk revocation while they load
        conn.execute(sa.text("DELETE FROM personal_access_tokens WHERE name LIKE 'bulk1%'"))
    last = max(last, pipeline.store.issue(USER, 0, "marker").seq)
    pipeline.wait_ready("eu", timeout_s=120)
    pipeline.wait_applied(last, timeout_s=120)
    wait_for(
        lambda: bool(_ever_assigned(pipeline, "eu-a")) and bool(_ever_assigned(pipeline, "eu-b")),
        60,
        "both workers given partitions of the region",
    )

    with pipeline.store.engine.connect() as conn:
        live = {r[0] for r in conn.execute(sa.text("SELECT token FROM personal_access_tokens"))}
        ever = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT DISTINCT token_hash FROM tokensync_outbox WHERE kind = 'token'")
            )
        }
    assert len(ever) > len(live) > 500
    client = pipeline.redis("eu")
    try:
        pipe = client.pipeline(transaction=False)
        hashes = sorted(ever)
        for token_hash in hashes:
            pipe.hget(pipeline.keys.token(token_hash), "s")
        states = pipe.execute()
    finally:
        client.close()
    wrong = [h[:12] for h, s in zip(hashes, states, strict=True) if (s == b"l") != (h in live)]
    assert wrong == [], f"{len(wrong)} tokens differ from the store: {wrong[:10]}"
