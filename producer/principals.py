"""Principal ids as the store's ``tokenable_id`` column holds them: a whole number for
Sanctum's BIGINT column, a string for Laravel's uuidMorphs/ulidMorphs (string or uuid)."""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal, cast

import sqlalchemy as sa

from producer import triggers_mysql
from producer.inputs import principal_id
from producer.models import PAT
from shared.errors import UsageError
from shared.events import canonical_principal_id

__all__ = ["PrincipalColumn", "row_owner"]

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
Kind = Literal["integer", "string", "uuid"]


def row_owner(value: object) -> int | str:
    """A tokenable_id as read from a row: the number, or its text."""
    return value if isinstance(value, int) else str(value)


class PrincipalColumn:
    """The type of one store's tokenable_id column (read once), and ids shaped for it."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._kind: Kind | None = None

    def owner_id(self, tokenable_id: int | str) -> int | str:
        """A principal id as the table holds it, or UsageError."""
        kind = self.kind()
        if kind == "integer":
            if isinstance(tokenable_id, str) and not tokenable_id.strip().isdigit():
                raise UsageError(
                    "tokenable id must be a whole number: this store's "
                    "tokenable_id column is an integer (string ids need Laravel's "
                    "uuidMorphs or ulidMorphs column)"
                )
            return principal_id(tokenable_id)
        text = str(tokenable_id).strip()
        if not text or len(text) > 255:
            raise UsageError("tokenable id must be 1 to 255 characters")
        if kind == "uuid":
            try:
                return str(uuid.UUID(text))
            except ValueError as e:
                raise UsageError(
                    "tokenable id must be a UUID: this store's tokenable_id column is of type uuid"
                ) from e
        return canonical_principal_id(text)

    def match(self, owner: int | str) -> sa.ColumnElement[bool]:
        """Rows whose tokenable_id is ``owner`` (from ``owner_id``): on a string column a
        UUID matches in any case (Laravel writes lower case; other tools print upper)."""
        if self.kind() == "string" and isinstance(owner, str) and _UUID.fullmatch(owner):
            return sa.func.lower(PAT.c.tokenable_id) == owner.lower()
        return cast(sa.ColumnElement[bool], PAT.c.tokenable_id == self.value(owner))

    def value(self, owner: int | str) -> Any:
        """``owner`` as a bound value typed like the table's tokenable_id column."""
        kind = self.kind()
        if kind == "integer":
            return owner
        text = sa.literal(str(owner), sa.String())
        if kind != "uuid" or self._dialect in triggers_mysql.DIALECTS:
            return text  # MariaDB's uuid type takes its text form as it is
        return sa.cast(text, sa.Uuid(as_uuid=False))

    def kind(self) -> Kind:
        """integer, string or uuid: the type of the table's tokenable_id (read once)."""
        if self._kind is None:
            columns = sa.inspect(self._engine).get_columns(PAT.name)
            kind = next(c["type"] for c in columns if c["name"] == "tokenable_id")
            self._kind = (
                "uuid"
                if isinstance(kind, sa.Uuid)
                else "string"
                if isinstance(kind, sa.String)
                else "integer"
            )
        return self._kind
