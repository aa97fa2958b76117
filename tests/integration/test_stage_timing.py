"""Stage timing across real processes: with ``TOKENSYNC_STAGE_TIMING`` on, a revocation
leaves, in every region's debug hash, the relay's and the worker's stamps in the order the
record went through them (what ``bench propagation --breakdown`` reads); off, no region
writes one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import stages
from tests.harness import Pipeline

pytestmark = pytest.mark.integration

USER = "App\\Models\\User"


@pytest.fixture
def timing() -> Iterator[None]:
    stages.enable(True)  # the relay runs in this process
    yield
    stages.enable(False)


def test_a_revocation_with_stage_timing_on_leaves_ordered_stamps_in_every_region(
    any_pipeline: Pipeline, timing: None
) -> None:
    p = any_pipeline
    p.settings = p.settings.with_overrides(stage_timing=True)
    regions = ["eu", "us"]
    p.start_relay()
    for region in regions:
        p.start_worker(region)
    for region in regions:
        p.wait_ready(region)
    issued = p.store.issue(USER, 1, "target")
    before = stages.now_us()
    revoked = p.store.revoke_token(issued.id)
    p.wait_applied(revoked.seq)
    after = stages.now_us()
    acked = stages.acked_at_us(revoked.seq)
    assert acked is not None
    for region in regions:
        client = p.redis(region)
        try:
            raw = client.hget(p.keys.stages, str(revoked.seq))
            ttl = client.ttl(p.keys.stages)
        finally:
            client.close()
        found = stages.parse_stages(revoked.seq, raw)  # type: ignore[arg-type]
        assert found is not None, f"{region} wrote no stamps for seq {revoked.seq}"
        assert before <= found.woke_us <= found.produced_us <= acked <= after, region
        # a worker may take the fetch before the relay's client has read the broker's
        # answer: both follow the broker's append, in either order
        assert found.produced_us <= found.fetched_us <= found.applied_us <= after, region
        assert 0 < ttl <= stages.DEBUG_TTL_S


def test_with_stage_timing_off_no_region_writes_a_debug_hash(one_region: Pipeline) -> None:
    p = one_region
    p.start_relay()
    p.start_worker("eu")
    p.wait_ready("eu")
    revoked = p.store.revoke_token(p.store.issue(USER, 1, "target").id)
    p.wait_applied(revoked.seq)
    client = p.redis("eu")
    try:
        assert 0 == client.exists(p.keys.stages)
    finally:
        client.close()
