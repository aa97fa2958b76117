"""What the store accepts from callers: principal ids, names and abilities it can store
and publish. Each check raises ``UsageError`` with a message that never repeats the value
(a responder may paste a token where an id goes)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.errors import UsageError

__all__ = ["MAX_ID", "MAX_NAME", "check_abilities", "check_text", "principal_id"]

MAX_ID = 2**63 - 1  # BIGINT: ids and principal ids past it fit no column
MAX_NAME = 4096
_MAX_ABILITY = 255
_MAX_ABILITIES = 256


def principal_id(tokenable_id: int | str) -> int:
    """A whole-number principal id that fits Sanctum's BIGINT column."""
    try:
        value = int(tokenable_id)
    except (TypeError, ValueError) as e:
        raise UsageError("tokenable id must be a whole number") from e
    if not 0 <= value <= MAX_ID:
        raise UsageError(f"tokenable id must be a whole number from 0 to {MAX_ID}")
    return value


def check_text(value: str, what: str) -> str:
    """Refuse text that cannot be stored and published as UTF-8 (lone surrogates, NUL)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} holds characters that are not Unicode text") from e
    if "\0" in value:
        raise UsageError(f"{what} must not hold NUL characters")
    return value


def check_abilities(abilities: Sequence[str]) -> tuple[str, ...]:
    """A token's abilities: a list (not one string) of short, non-empty texts."""
    if isinstance(abilities, str):
        raise UsageError("abilities must be a list of strings, not one string")
    result = tuple(abilities)
    if len(result) > _MAX_ABILITIES:
        raise UsageError(f"a token holds at most {_MAX_ABILITIES} abilities")
    for ability in result:
        if not isinstance(ability, str) or not ability.strip():
            raise UsageError("an ability must be a non-empty string")
        if len(ability) > _MAX_ABILITY:
            raise UsageError(f"an ability is limited to {_MAX_ABILITY} characters")
        check_text(ability, "an ability")
    return result
