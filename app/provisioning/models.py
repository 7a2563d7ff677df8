"""Provisioning runs: per deployment and target, what was last applied and how it went."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.clock import utc_now
from app.core.database import Base


class ProvisioningRun(Base):
    __tablename__ = "provisioning_runs"
    __table_args__ = (UniqueConstraint("deployment_id", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    target: Mapped[str] = mapped_column(String(32))
    # pending → succeeded | failed | skipped (upstream not configured); removing while deleting.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    content_hash: Mapped[str | None] = mapped_column(String(64))
    applied_generation: Mapped[int | None]
    writes: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    last_attempt_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    succeeded_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
