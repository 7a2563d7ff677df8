"""Deployments: the Airflow installations Sextant runs and watches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.clock import utc_now
from app.core.database import Base


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="RESTRICT"), index=True
    )
    description: Mapped[str] = mapped_column(Text, default="")
    executor: Mapped[str] = mapped_column(String(32))
    airflow_version: Mapped[str] = mapped_column(String(32))
    # Component name → {"replicas", "cpu", "memory"}; the desired spec as the user asked for it.
    components: Mapped[dict[str, Any]] = mapped_column(JSON)
    worker_concurrency: Mapped[int] = mapped_column(default=16)
    min_workers: Mapped[int] = mapped_column(default=1)
    max_workers: Mapped[int] = mapped_column(default=10)
    log_retention_days: Mapped[int] = mapped_column(default=15)
    # Set when a delete asked to keep the deployment's logs in Elasticsearch.
    keep_logs: Mapped[bool] = mapped_column(default=False)
    # Bumped on every change of the desired spec, so reconcilers can tell what they applied.
    generation: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    def snapshot(self) -> dict[str, Any]:
        """What the audit trail records of this deployment's desired spec."""
        return {
            "name": self.name,
            "description": self.description,
            "executor": self.executor,
            "airflow_version": self.airflow_version,
            "components": self.components,
            "worker_concurrency": self.worker_concurrency,
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
            "log_retention_days": self.log_retention_days,
        }
