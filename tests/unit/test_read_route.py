"""The read route: the replica first, the primary when it does not answer, and the replica
again once its retry pause passed."""

from __future__ import annotations

from shared.read_route import ReadRoute


def test_a_replica_that_failed_is_asked_after_the_primary_until_its_pause_passed() -> None:
    now = [100.0]
    route = ReadRoute("replica", "primary", retry_after_s=5.0, clock=lambda: now[0])
    assert ("replica", "primary") == route.order()
    route.failed("replica")
    assert ("primary", "replica") == route.order()
    now[0] += 4.9
    assert ("primary", "replica") == route.order()
    now[0] += 0.2
    assert ("replica", "primary") == route.order()


def test_a_validator_of_the_primary_alone_has_one_route() -> None:
    route = ReadRoute("primary")
    route.failed("primary")
    assert ("primary",) == route.order()


def test_a_failing_primary_does_not_push_the_replica_back() -> None:
    route = ReadRoute("replica", "primary", clock=lambda: 0.0)
    route.failed("primary")
    assert ("replica", "primary") == route.order()
