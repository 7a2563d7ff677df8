"""API shapes of tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.names import ResourceName
from app.core.security import Role


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["ci-pipeline"])
    role: Role
    deployment: ResourceName | None = Field(
        default=None, description="Required for deployment roles, refused for workspace roles"
    )


class TokenRead(BaseModel):
    id: str
    name: str
    role: Role
    workspace: str | None
    deployment: str | None
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="The token itself; shown once, never stored")
