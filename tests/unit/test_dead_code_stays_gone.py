"""Names nothing called are gone from ``shared`` (issue 14): a validator's outcome has no
HTTP status of its own (the middleware and the gate answer by their own contracts), a
keyring does not expose its active key id, Redis has no ``tid:`` keys, and no process
exports a validations counter that nothing increments (the gate counts its requests by
outcome in ``tokensync_gate_requests_total``; the ASGI middleware exports no metrics)."""

from __future__ import annotations

from prometheus_client import REGISTRY

import shared.metrics
from shared.events import Keyring
from shared.keys import RedisKeys
from shared.outcomes import Outcome


def test_an_outcome_has_no_http_status_of_its_own() -> None:
    assert not hasattr(Outcome.VALID, "http_status")


def test_a_keyring_does_not_expose_its_active_key_id() -> None:
    assert not hasattr(Keyring({"k1": b"s" * 32}, "k1"), "active_id")


def test_the_redis_keys_name_no_token_id_index() -> None:
    assert not hasattr(RedisKeys(), "token_id")


def test_no_validations_counter_is_exported_that_nothing_increments() -> None:
    assert not hasattr(shared.metrics, "VALIDATIONS")
    assert REGISTRY.get_sample_value("tokensync_validations_total") is None
    names = {metric.name for metric in REGISTRY.collect()}
    assert "tokensync_validations" not in names
