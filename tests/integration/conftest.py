"""Fixtures the integration tests of several modules share (the session's servers and
the plain pipelines are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.keys import Topics
from tests.harness import Pipeline, pipeline_context
from tests.replica_helpers import ReplicatedRedis, replicated_redis


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    """A primary and its replica, ``redis-server`` processes of this test's own."""
    with replicated_redis(tmp_path / "redis") as servers:
        yield servers


@pytest.fixture
def replicated_region(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    redis_set: ReplicatedRedis,
) -> Iterator[Pipeline]:
    """Region eu served by ``redis_set`` (nothing started: the test starts the relay and
    the worker when it needs them)."""
    yield from pipeline_context(
        Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, {"eu": redis_set.spec})
    )
