"""Who acts on the token store and why: the audit context each mutation carries (actor
kind, actor, reason, request id), checked and cleaned on the way in (a reason that
holds something shaped like a token keeps ``[token redacted]`` in its place)."""

from __future__ import annotations

import enum
import os
import pwd
import re
import socket
import unicodedata
import uuid
from dataclasses import dataclass

from shared.errors import UsageError

__all__ = ["ActorKind", "AuditContext", "has_reason"]


_MAX_REASON = 2000
_MAX_ACTOR = 255


class ActorKind(enum.Enum):
    """Through which surface an act came."""

    API = "api"
    CLI = "cli"
    PYTHON = "python"
    SQL = "sql"


@dataclass(frozen=True)
class AuditContext:
    """Who acts and why: handed to each mutating ``TokenStore`` method."""

    kind: ActorKind
    actor: str
    reason: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        if not self.actor or len(self.actor) > _MAX_ACTOR:
            raise UsageError(f"an audit actor must be 1 to {_MAX_ACTOR} characters")
        _storable(self.actor, "an audit actor")
        if self.reason is not None:
            if len(self.reason) > _MAX_REASON:
                raise UsageError(f"a reason is limited to {_MAX_REASON} characters")
            _storable(self.reason, "the reason")
        # every context, however built, keeps its reason as cleaned (redacted, trimmed)
        object.__setattr__(self, "reason", _clean(self.reason))

    @classmethod
    def python(cls, actor: str = "python", reason: str | None = None) -> AuditContext:
        """A caller of the Python API, named by the caller."""
        return cls(ActorKind.PYTHON, actor, reason)

    @classmethod
    def cli(cls, reason: str | None = None) -> AuditContext:
        """The person at this command line: the OS user of the process's real uid (not
        LOGNAME/USER, which anyone sets) and the host."""
        uid = os.getuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:  # a uid without a passwd entry (containers)
            user = f"uid-{uid}"
        actor = f"{user}@{socket.gethostname()}"
        return cls(ActorKind.CLI, actor, reason, f"cli-{uuid.uuid4().hex[:16]}")

    @classmethod
    def api(
        cls, token_id: int, tokenable_type: str, tokenable_id: int | str, **kw: str | None
    ) -> AuditContext:
        """An admin API caller: its token id and principal."""
        return cls(
            ActorKind.API,
            f"token:{token_id} ({tokenable_type}:{tokenable_id})"[:_MAX_ACTOR],
            kw.get("reason"),
            kw.get("request_id"),
        )


def _storable(text: str, what: str) -> None:
    """Refuse text the audit table cannot hold as UTF-8 (lone surrogates, NUL); the
    message never repeats the text (it may hold a secret)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(
            f"{what} holds characters that are not Unicode text (a lone surrogate "
            "or an undecodable byte)"
        ) from e
    if "\0" in text:
        raise UsageError(f"{what} must not hold NUL characters")


# Whitespace, control and format characters (zero-width space, joiners, BOM, bidi marks).
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def has_reason(reason: str | None) -> bool:
    """Whether ``reason`` says anything: one visible character at least (whitespace and
    zero-width characters alone are no reason)."""
    return reason is not None and any(
        not c.isspace() and unicodedata.category(c) not in _INVISIBLE for c in reason
    )


def _clean(reason: str | None) -> str | None:
    """A reason as kept: trimmed (None when nothing visible is left), and with every run
    shaped like a secret of this store (a responder may paste the leaked one into the
    reason) replaced by ``[token redacted]``."""
    if not has_reason(reason):
        return None
    assert reason is not None
    return _TOKENISH.sub("[token redacted]", reason.strip())


# Anything a Sanctum store may accept as a secret: 40 or more letters and digits (bare
# pre-Sanctum-4 secrets, checksummed ones, with the app's token prefix), with or without
# ``id|``, and whatever word characters are glued to it. Redacted whether or not the
# store holds it (a revoked or pruned token is no business of the audit trail either).
_TOKENISH = re.compile(r"(?:\d+\|)?[A-Za-z0-9_]*[A-Za-z0-9]{40,}[A-Za-z0-9_]*")
