"""Every query of workspaces."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageParams, fetch_page
from app.workspaces.models import Workspace


async def get_by_name(session: AsyncSession, name: str) -> Workspace | None:
    """The workspace with this name, if any."""
    return await session.scalar(select(Workspace).where(Workspace.name == name))


async def get(session: AsyncSession, workspace_id: int) -> Workspace | None:
    """The workspace with this id, if any."""
    return await session.get(Workspace, workspace_id)


async def page(
    session: AsyncSession, params: PageParams, *, only_id: int | None
) -> tuple[Sequence[Workspace], int]:
    """Workspaces by name (only one when `only_id` is given), with the total."""
    conditions = [] if only_id is None else [Workspace.id == only_id]
    return await fetch_page(session, Workspace, conditions, [Workspace.name], params)


async def name_taken(session: AsyncSession, name: str) -> bool:
    """Whether a workspace already has this name."""
    return await session.scalar(select(func.count()).where(Workspace.name == name)) != 0
