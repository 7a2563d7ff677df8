"""API shapes of workspaces."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.names import ResourceName


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ResourceName
    description: str = Field(default="", max_length=2000)


class WorkspaceUpdate(BaseModel):
    """A rename and/or a new description; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: ResourceName | None = None
    description: str | None = Field(default=None, max_length=2000)


class WorkspaceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    description: str
    created_at: datetime
    updated_at: datetime
