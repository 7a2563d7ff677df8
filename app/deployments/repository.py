"""Every query of deployments."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.deployments.models import Deployment


async def get_by_name(session: AsyncSession, name: str) -> Deployment | None:
    """The deployment with this name, if any."""
    return await session.scalar(select(Deployment).where(Deployment.name == name))


async def get(session: AsyncSession, deployment_id: int) -> Deployment | None:
    """The deployment with this id, if any."""
    return await session.get(Deployment, deployment_id)


async def name_taken(session: AsyncSession, name: str) -> bool:
    """Whether a deployment anywhere in the installation has this name."""
    return await session.scalar(select(func.count()).where(Deployment.name == name)) != 0


async def count_in_workspace(session: AsyncSession, workspace_id: int) -> int:
    """How many deployments a workspace has."""
    count = await session.scalar(
        select(func.count()).where(Deployment.workspace_id == workspace_id)
    )
    return int(count or 0)


async def page(
    session: AsyncSession,
    *,
    workspace_id: int | None,
    deployment_id: int | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Deployment], int]:
    """Deployments by name, filtered to a workspace and/or one deployment, with the total."""
    query = select(Deployment)
    count = select(func.count()).select_from(Deployment)
    if workspace_id is not None:
        query = query.where(Deployment.workspace_id == workspace_id)
        count = count.where(Deployment.workspace_id == workspace_id)
    if deployment_id is not None:
        query = query.where(Deployment.id == deployment_id)
        count = count.where(Deployment.id == deployment_id)
    total = await session.scalar(count)
    rows = await session.scalars(query.order_by(Deployment.name).limit(limit).offset(offset))
    return rows.all(), int(total or 0)
