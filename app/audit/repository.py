"""Every query of the audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.core.pagination import PageParams, fetch_page


def add(session: AsyncSession, event: AuditEvent) -> None:
    """Stage an event in the caller's transaction."""
    session.add(event)


def _conditions(
    workspace_id: int | None, deployment_id: int | None, action: str | None
) -> list[ColumnElement[bool]]:
    conditions = []
    if workspace_id is not None:
        conditions.append(AuditEvent.workspace_id == workspace_id)
    if deployment_id is not None:
        conditions.append(AuditEvent.deployment_id == deployment_id)
    if action is not None:
        conditions.append(AuditEvent.action == action)
    return conditions


async def page(
    session: AsyncSession,
    params: PageParams,
    *,
    workspace_id: int | None,
    deployment_id: int | None,
    action: str | None,
) -> tuple[Sequence[AuditEvent], int]:
    """Newest events first, with the total that matched."""
    conditions = _conditions(workspace_id, deployment_id, action)
    order = [AuditEvent.occurred_at.desc(), AuditEvent.id.desc()]
    return await fetch_page(session, AuditEvent, conditions, order, params)
