"""The figures ``tokensync region add`` shows while a region loads."""

from __future__ import annotations

from producer.region_commands import _rate_eta, progress_line


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
