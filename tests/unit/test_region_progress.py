"""The figures ``tokensync region add`` shows while a region loads."""

from __future__ import annotations

from typing import cast

import pytest

from producer.region_commands import _rate_eta, _start_worker, progress_line
from producer.store import TokenStore
from shared.settings import Region


def test_progress_without_a_known_total_shows_records_and_rate_only() -> None:
    assert "1,200 records (total not yet known)  300/s" == progress_line(1200, 0, 300.0, None)


def test_progress_with_a_total_shows_the_eta() -> None:
    assert "1,200/5,000 records  300/s  ETA 0:13" == progress_line(1200, 5000, 300.0, 12.7)


def test_rate_and_eta_come_from_the_recent_samples() -> None:
    samples = [(0.0, 0), (1.0, 100), (2.0, 200)]
    rate, eta = _rate_eta(samples, 200, 1200)
    assert 100.0 == rate
    assert eta == 10.0


def test_no_eta_before_anything_moved_or_without_a_total() -> None:
    assert (0.0, None) == _rate_eta([(0.0, 0)], 0, 1000)
    assert _rate_eta([(0.0, 0), (1.0, 50)], 50, 0)[1] is None


class _Host:
    """A worker host whose start fails as ``failure`` says."""

    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.workers: set[str] = set()

    def running(self) -> bool:
        return True

    def worker_alive(self, region: str) -> bool:
        return region in self.workers

    def add_worker(self, region: Region) -> object:
        self.workers.add(region.name)  # half started, then the failure
        if self.failure is not None:
            raise self.failure
        return None

    def remove_worker(self, region: str) -> bool:
        self.workers.discard(region)
        return True


class _Store:
    """The store's region list."""

    def __init__(self, *names: str) -> None:
        self.regions = set(names)

    def remove_region(self, name: str, **_audit: object) -> None:
        self.regions.discard(name)


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError("fork failed")])
def test_a_region_whose_worker_fails_to_start_or_is_interrupted_is_not_left_registered(
    failure: BaseException,
) -> None:
    host, store = _Host(failure), _Store("ap")
    with pytest.raises(type(failure)):
        _start_worker(
            host,
            Region("ap", "redis://127.0.0.1:1/0"),
            cast(TokenStore, store),
            registered_now=True,
        )
    assert (set(), set()) == (store.regions, host.workers), "not registered at all"


def test_a_region_registered_by_an_earlier_run_stays_registered_when_its_worker_fails() -> None:
    """Re-running `region add` finishes the job; its failure never undoes the earlier run."""
    host, store = _Host(OSError("fork failed")), _Store("ap")
    with pytest.raises(OSError):
        _start_worker(
            host,
            Region("ap", "redis://127.0.0.1:1/0"),
            cast(TokenStore, store),
            registered_now=False,
        )
    assert {"ap"} == store.regions
    host.failure = None
    assert _start_worker(
        host, Region("ap", "redis://127.0.0.1:1/0"), cast(TokenStore, store), registered_now=False
    )
    assert {"ap"} == host.workers
