"""API shapes of alerting: alerts, history, notifications, rule overrides, silences, webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.alerting.silences import SILENCEABLE_LABELS, MatchType

AlertStatusName = Literal["inactive", "pending", "firing", "resolved"]


def _timestamp_string(value: object) -> object:
    # Pydantic would read a number as Unix seconds; the API documents RFC 3339 strings, and a
    # number in the wrong unit would silently land in 1970 or the far future.
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-01-01T00:00:00Z")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_string)]
"""An input time: an RFC 3339 string (numbers are refused, not read as Unix seconds)."""


class AlertRead(BaseModel):
    rule: str
    status: AlertStatusName
    silenced: bool
    severity: str
    value: float | None
    threshold: float | None
    active_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    last_evaluated_at: datetime | None
    source: str


class AlertEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    rule: str
    kind: str
    at: datetime
    episode: datetime
    value: float | None
    threshold: float | None
    severity: str
    silenced: bool
    source: str


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: int
    email: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    message_id: str
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None


class RuleRead(BaseModel):
    """A catalogue rule as it applies to one deployment."""

    name: str
    severity: str
    for_seconds: float
    threshold: float | None
    threshold_unit: str | None
    muted: bool
    overridden: list[str]
    expr: str


class RuleOverrideUpdate(BaseModel):
    """Override a rule for one deployment; null resets a parameter to the catalogue default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    threshold: float | str | None = Field(
        default=None,
        description="A number in the rule's unit, or a duration (`90s`, `2m`) or percentage",
        examples=[90, "2m", "5%"],
    )
    for_: float | str | None = Field(
        default=None, alias="for", description="Seconds or a duration such as `5m`"
    )
    severity: Literal["info", "warning", "critical"] | None = None
    muted: bool | None = None

    @field_validator("threshold", "for_", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        # JSON true would otherwise pass as the number 1.
        if isinstance(value, bool):
            raise ValueError("must be a number or a string, not a boolean")
        return value


class MatcherIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Literal[SILENCEABLE_LABELS]  # type: ignore[valid-type]
    type: MatchType = MatchType.EQUAL
    value: str = Field(min_length=0, max_length=200)


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[MatcherIn] = Field(min_length=1, max_length=20)
    starts_at: Timestamp | None = Field(default=None, description="Default: now")
    ends_at: Timestamp
    comment: str = Field(default="", max_length=2000)


class SilenceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ends_at: Timestamp | None = None
    comment: str | None = Field(default=None, max_length=2000)


class SilenceRead(BaseModel):
    id: int
    matchers: list[dict[str, Any]]
    starts_at: datetime
    ends_at: datetime
    status: Literal["pending", "active", "expired"]
    created_by: str
    comment: str
    workspace: str | None


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook payload (the fields Sextant reads)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Timestamp
    endsAt: Timestamp | None = None
    fingerprint: str | None = None


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body (version 4); unknown fields are allowed and ignored."""

    version: str = "4"
    status: Literal["firing", "resolved"] | None = None
    receiver: str | None = None
    alerts: list[WebhookAlert] = Field(max_length=10_000)


class WebhookResult(BaseModel):
    accepted: int
    ignored: int
