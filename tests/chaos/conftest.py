"""The chaos suite runs in both signing modes: ``hmac`` (a MAC per record) and ``sealed``
(the relay's Ed25519 seal per batch, issue 20): every fault below must lose nothing and
accept no revoked token in either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.keys import Topics
from shared.seal_keys import SealKeyDir
from tests.harness import Pipeline, pipeline_context

MODES = ("hmac", "sealed")


@pytest.fixture(params=MODES)
def signing_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def pipeline(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    region_urls: dict[str, str],
    signing_mode: str,
) -> Iterator[Pipeline]:
    """The shared ``pipeline`` fixture, in ``signing_mode`` (sealed: a fresh seal key)."""
    pipeline = Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, region_urls)
    if signing_mode != "hmac":
        keys = SealKeyDir(tmp_path / "seal-keys")
        keys.generate()
        pipeline.settings = pipeline.settings.with_overrides(
            signing_mode=signing_mode, seal_keys_dir=tmp_path / "seal-keys", seal_wait_s=2.0
        )
    yield from pipeline_context(pipeline)
