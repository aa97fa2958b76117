"""A token holding "*" is found by its decoded ability list, however its JSON spells it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.dryrun import count_ability
from producer.store import TokenStore
from producer.tokens import decode_abilities

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_include_wildcard_revokes_a_star_token_whatever_its_json_spelling(
    store: TokenStore,
) -> None:
    """Item 11 of issue 11 says: match on the decoded list. ``revoke ability`` does, but
    the '*' report and ``--include-wildcard`` still match the raw text ``"*"``: a row a
    writer other than PHP's json_encode stored as ``["\\u002a"]`` decodes to ``*``
    everywhere (the regions grant it every ability), yet the responder is told no live
    token holds '*' and --include-wildcard leaves it live."""
    now = utcnow()
    with store.engine.begin() as conn:  # a Laravel app (or anyone with the table) writes it
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, 5, 'cli', :h, :a, :c, :c)"
            ),
            {"t": USER, "h": "cd" * 32, "a": '["\\u002a"]', "c": now},
        )
        stored = conn.execute(sa.text("SELECT abilities FROM personal_access_tokens")).scalar()
    assert ("*",) == decode_abilities(stored), "the row holds '*' once decoded"
    assert 1 == count_ability(store, "orders:read").wildcard_total, "the report misses it"
    store.revoke_ability("orders:read", include_wildcard=True)
    assert [] == store.list_tokens(USER, 5), "--include-wildcard left a '*' token live"
