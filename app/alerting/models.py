"""Alert state, its history, the notification outbox, silences and per-deployment rule overrides.

The outbox is the notification log as well: one row per (alert event, recipient), written in the
same transaction as the state change that caused it, and marked sent only once the SMTP server
accepted it. A crash between the two re-sends at most the message in flight, with the same
Message-ID.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.clock import utc_now
from app.core.database import Base, BigIntId


class AlertRuleOverride(Base):
    __tablename__ = "alert_rule_overrides"
    __table_args__ = (UniqueConstraint("deployment_id", "rule"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(100))
    threshold: Mapped[float | None]
    for_seconds: Mapped[float | None]
    severity: Mapped[str | None] = mapped_column(String(16))
    muted: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class Alert(Base):
    """The current state of one rule for one deployment (or for the fleet: no deployment)."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("deployment_id", "rule"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    rule: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="inactive", index=True)
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None]
    threshold: Mapped[float | None]
    active_since: Mapped[datetime | None]
    fired_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    last_evaluated_at: Mapped[datetime | None]
    # Who last moved it: Sextant's evaluator or an Alertmanager webhook.
    source: Mapped[str] = mapped_column(String(16), default="sextant")
    summary: Mapped[str] = mapped_column(Text, default="")


class AlertEvent(Base):
    """A notifiable moment of an alert: it fired, it is still firing (repeat), it resolved."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_deployment_id_at", "deployment_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    rule: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utc_now)
    # The fired_at of the episode this event belongs to.
    episode: Mapped[datetime]
    value: Mapped[float | None]
    threshold: Mapped[float | None]
    severity: Mapped[str] = mapped_column(String(16))
    silenced: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(16), default="sextant")


class Notification(Base):
    """One e-mail to one recipient about one event: the outbox and the notification log."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "email"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notifications_alert_id_email", "alert_id", "email"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("alert_events.id", ondelete="CASCADE"), index=True
    )
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    recipient_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_recipients.id", ondelete="SET NULL")
    )
    email: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(16))
    episode: Mapped[datetime]
    # pending → sent | failed (permanent) | cancelled (recipient removed before delivery)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utc_now)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    sent_at: Mapped[datetime | None]


class Silence(Base):
    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # [{"label": "deployment", "type": "=", "value": "etl-prod"}, ...]
    matchers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
    # The workspace the silence is confined to (None: installation-wide, system admins only).
    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
