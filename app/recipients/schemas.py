"""API shapes of alert recipients."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order of severities, for "at least this severe" comparisons."""
        return list(Severity).index(self)


class RecipientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Field(max_length=320, examples=["oncall@example.com"])
    min_severity: Severity = Field(
        default=Severity.WARNING, description="The least severe alert this recipient wants"
    )
    display_name: str = Field(default="", max_length=200)


class RecipientUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = Field(default=None, max_length=320)
    min_severity: Severity | None = None
    display_name: str | None = Field(default=None, max_length=200)


class RecipientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    display_name: str
    min_severity: Severity
    scope: str = Field(description="`deployment` or `workspace`")
    created_at: datetime
    updated_at: datetime
