"""Every query of workspaces."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.workspaces.models import Workspace


async def get_by_name(session: AsyncSession, name: str) -> Workspace | None:
    """The workspace with this name, if any."""
    return await session.scalar(select(Workspace).where(Workspace.name == name))


async def get(session: AsyncSession, workspace_id: int) -> Workspace | None:
    """The workspace with this id, if any."""
    return await session.get(Workspace, workspace_id)


async def page(
    session: AsyncSession, *, only_id: int | None, limit: int, offset: int
) -> tuple[Sequence[Workspace], int]:
    """Workspaces by name (only one when `only_id` is given), with the total."""
    query = select(Workspace)
    count = select(func.count()).select_from(Workspace)
    if only_id is not None:
        query = query.where(Workspace.id == only_id)
        count = count.where(Workspace.id == only_id)
    total = await session.scalar(count)
    rows = await session.scalars(query.order_by(Workspace.name).limit(limit).offset(offset))
    return rows.all(), int(total or 0)


async def name_taken(session: AsyncSession, name: str) -> bool:
    """Whether a workspace already has this name."""
    return await session.scalar(select(func.count()).where(Workspace.name == name)) != 0
