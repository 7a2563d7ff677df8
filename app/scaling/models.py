"""Scaling policies (one per deployment that has one) and the decisions taken under them.

A policy row holds what the user set and, apart from it, the little state the decision loop
carries from one round to the next (the window of recent recommendations), so that another
Sextant replica that takes the lease over continues with the same window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.clock import utc_now
from app.core.database import Base, BigIntId


class ScalingPolicy(Base):
    __tablename__ = "scaling_policies"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), unique=True
    )
    enabled: Mapped[bool] = mapped_column(default=False)
    # None: the deployment's own min_workers / max_workers / worker_concurrency.
    min_workers: Mapped[int | None]
    max_workers: Mapped[int | None]
    tasks_per_worker: Mapped[int | None]
    scale_up_limit: Mapped[int] = mapped_column(default=10)
    scale_up_limit_kind: Mapped[str] = mapped_column(String(16), default="pods")
    scale_down_window_seconds: Mapped[int] = mapped_column(default=300)
    # Flap damping grows the window up to this (no growth when not above the window).
    scale_down_window_max_seconds: Mapped[int] = mapped_column(default=1200)
    # Only tasks of this Celery queue count (None: every task of the executor).
    queue: Mapped[str | None] = mapped_column(String(200))
    # When a user last changed the policy (the loop's own state below does not move it; the
    # loop reads its policies again when this moves).
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
    # Loop state: [[unix seconds, workers], ...] recommended within the window.
    recommendations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Loop state: the flap damping (`policy.Damping` as Unix seconds); None until it matters.
    damping: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The last decision's reason, desired and current, so unchanged rounds are not stored again.
    last_reason: Mapped[str | None] = mapped_column(String(32))
    last_desired: Mapped[int | None]


class ScalingDecision(Base):
    """One decision of the loop: its inputs, what it wanted, what was applied, and why."""

    __tablename__ = "scaling_decisions"
    __table_args__ = (
        Index("ix_scaling_decisions_deployment_id_decided_at", "deployment_id", "decided_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    decided_at: Mapped[datetime] = mapped_column(index=True)
    queued: Mapped[float | None]
    running: Mapped[float | None]
    tasks_per_worker: Mapped[int]
    min_workers: Mapped[int]
    max_workers: Mapped[int]
    current: Mapped[int]
    recommended: Mapped[int | None]
    desired: Mapped[int]
    applied: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
