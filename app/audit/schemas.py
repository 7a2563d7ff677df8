"""API shapes of audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    actor_token_id: str | None
    actor_name: str
    action: str
    resource_type: str
    resource_id: str
    workspace_id: int | None
    deployment_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
