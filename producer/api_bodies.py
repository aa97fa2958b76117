"""The request bodies of the token store's HTTP API (pydantic models: FastAPI checks
them and shows them in the OpenAPI description)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from producer.inputs import MAX_ID

__all__ = [
    "AbilityRequest",
    "AllRequest",
    "IssueRequest",
    "PrincipalRequest",
    "RevokeRequest",
    "RotateRequest",
    "TokenRef",
]

Reason = Field(default=None, max_length=2000, description="Why (kept in the audit record).")
MassReason = Field(
    default=None, max_length=2000, description="Why (required: kept in the audit record)."
)


class IssueRequest(BaseModel):
    """Body of ``POST /v1/tokens``."""

    tokenable_type: str = Field(min_length=1, max_length=255)
    tokenable_id: int | str = Field(description="a whole number, or a UUID/ULID on morph tables")
    name: str = Field(min_length=1, max_length=4096)
    abilities: list[str] = Field(default_factory=lambda: ["*"])
    expires_in: str | None = Field(default=None, description="seconds, or 90s/15m/2h/7d")
    reason: str | None = Reason


class RotateRequest(BaseModel):
    """Body of ``POST /v1/tokens/{id}/rotate``."""

    grace: str = "0"
    reason: str | None = Reason


class PrincipalRequest(BaseModel):
    """Body of ``POST /v1/revocations/principal``."""

    tokenable_type: str = Field(min_length=1, max_length=255)
    tokenable_id: int | str
    reason: str | None = MassReason
    dry_run: bool = False


class AbilityRequest(BaseModel):
    """Body of ``POST /v1/revocations/ability``."""

    ability: str = Field(min_length=1, max_length=255)
    include_wildcard: bool = False
    reason: str | None = MassReason
    dry_run: bool = False


class AllRequest(BaseModel):
    """Body of ``POST /v1/revocations/all``."""

    before: str = "now"
    reason: str | None = MassReason
    dry_run: bool = False


class TokenRef(BaseModel):
    """Exactly one of: the token or its bare secret, its SHA-256 (hex), its id."""

    token: str | None = Field(default=None, max_length=512)
    hash: str | None = Field(default=None, max_length=64)
    id: int | None = Field(default=None, ge=1, le=MAX_ID)


class RevokeRequest(TokenRef):
    """Body of ``POST /v1/tokens/revoke``."""

    reason: str | None = Reason
