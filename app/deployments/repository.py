"""Every query of deployments."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageParams, fetch_page
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
    params: PageParams,
    *,
    workspace_id: int | None,
    deployment_id: int | None,
) -> tuple[Sequence[Deployment], int]:
    """Deployments by name, limited to a workspace and/or one deployment, with the total."""
    conditions = []
    if workspace_id is not None:
        conditions.append(Deployment.workspace_id == workspace_id)
    if deployment_id is not None:
        conditions.append(Deployment.id == deployment_id)
    return await fetch_page(session, Deployment, conditions, [Deployment.name], params)
