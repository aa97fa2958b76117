"""Audit records never hold a plaintext token."""

from __future__ import annotations

import hashlib
import secrets
import string

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer.audit import AuditContext
from producer.clock import utcnow
from producer.store import TokenStore

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_pre_sanctum_4_secret_pasted_into_a_reason_is_redacted(store: TokenStore) -> None:
    """A table shared with a Laravel app holds tokens from before Sanctum 4: 40 random
    characters, no crc32b suffix, hashed as they are; tokensync validates them (by hash).
    A scanner reports the bare secret; the responder pastes it into --reason. The redaction
    only knows checksummed (48 characters) or ``id|``-shaped tokens, so the live secret is
    written into the insert-only audit trail in plaintext."""
    alphabet = string.ascii_letters + string.digits
    legacy = "".join(secrets.choice(alphabet) for _ in range(40))
    now = utcnow()
    with store.engine.begin() as conn:  # issued by Sanctum 3 long ago
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, 3, 'old', :h, '[\"*\"]', :c, :c)"
            ),
            {"t": USER, "h": hashlib.sha256(legacy.encode()).hexdigest(), "c": now},
        )
    found = store.find(legacy)
    assert found is not None, "tokensync accepts the bare legacy secret"
    store.revoke_token(
        found.id,
        audit=AuditContext.python("responder", reason=f"found {legacy} in a public paste"),
    )
    entries = [e for e in audit_log.read(store.engine) if e.action == "token.revoke"]
    assert entries and entries[-1].reason is not None
    assert legacy not in entries[-1].reason, "the audit record holds a live plaintext secret"


@pytest.mark.parametrize(
    "paste",
    [
        "user{token}",  # glued to a word character
        "token={token}.",  # a checksummed token in a log line
        "x_{secret}_y",  # the bare checksummed secret, glued on both sides
    ],
)
def test_a_token_glued_to_word_characters_in_a_reason_is_redacted(
    store: TokenStore, paste: str
) -> None:
    leaked = store.issue(USER, 4, "leaked")
    secret = leaked.plain_text_token.split("|", 1)[1]
    reason = "saw " + paste.format(token=leaked.plain_text_token, secret=secret) + " in a log"
    store.revoke_token(leaked.id, audit=AuditContext.python("responder", reason=reason))
    (entry,) = [e for e in audit_log.read(store.engine) if e.action == "token.revoke"]
    assert entry.reason is not None and "[token redacted]" in entry.reason
    assert secret not in entry.reason
    assert entry.reason.startswith("saw ") and entry.reason.endswith(" in a log")
