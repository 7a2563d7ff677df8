"""Alert recipients: who gets a deployment's (or a whole workspace's) alert e-mails."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.clock import utc_now
from app.core.database import Base


class AlertRecipient(Base):
    __tablename__ = "alert_recipients"
    __table_args__ = (
        # One address once per deployment, and once per workspace for workspace-wide recipients.
        Index(
            "uq_alert_recipients_deployment_email",
            "deployment_id",
            "email",
            unique=True,
            sqlite_where=text("deployment_id IS NOT NULL"),
            postgresql_where=text("deployment_id IS NOT NULL"),
        ),
        Index(
            "uq_alert_recipients_workspace_email",
            "workspace_id",
            "email",
            unique=True,
            sqlite_where=text("deployment_id IS NULL"),
            postgresql_where=text("deployment_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    # NULL: the recipient receives alerts of every deployment in the workspace.
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    min_severity: Mapped[str] = mapped_column(String(16), default="warning")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    def snapshot(self) -> dict[str, object]:
        """What the audit trail records of this recipient."""
        return {
            "email": self.email,
            "display_name": self.display_name,
            "min_severity": self.min_severity,
        }
