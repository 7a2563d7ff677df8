"""Every query of the audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from app.audit.models import AuditEvent


def add(session: AsyncSession, event: AuditEvent) -> None:
    """Stage an event in the caller's transaction."""
    session.add(event)


def _filtered(
    query: Select[tuple[AuditEvent]], workspace_id: int | None, deployment_id: int | None,
    action: str | None,
) -> Select[tuple[AuditEvent]]:
    if workspace_id is not None:
        query = query.where(AuditEvent.workspace_id == workspace_id)
    if deployment_id is not None:
        query = query.where(AuditEvent.deployment_id == deployment_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return query


async def page(
    session: AsyncSession, *, workspace_id: int | None, deployment_id: int | None,
    action: str | None, limit: int, offset: int,
) -> tuple[Sequence[AuditEvent], int]:
    """Newest events first, with the total that matched."""
    query = _filtered(select(AuditEvent), workspace_id, deployment_id, action)
    total = await session.scalar(
        _filtered(select(func.count()).select_from(AuditEvent), workspace_id, deployment_id, action)  # type: ignore[arg-type]
    )
    rows = await session.scalars(
        query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)
