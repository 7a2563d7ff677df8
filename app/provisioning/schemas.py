"""API shapes of provisioning state."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ProvisioningRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    target: str
    status: str
    content_hash: str | None
    applied_generation: int | None
    writes: int
    error: str | None
    attempts: int
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    succeeded_at: datetime | None


class ProvisioningRead(BaseModel):
    deployment: str
    generation: int
    status: str
    status_reason: str
    targets: list[ProvisioningRunRead]
