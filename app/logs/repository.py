"""The one query of the logs domain: whose logs retention applies to."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.deployments.models import Deployment
from app.deployments.schemas import DeploymentStatus


async def deployments_with_logs(session: AsyncSession) -> Sequence[Deployment]:
    """Deployments whose logs are kept for their retention, by name.

    One being deleted is left out: its teardown deletes its logs (or keeps them, as asked), and
    retention must not race it.
    """
    rows = await session.scalars(
        select(Deployment)
        .where(Deployment.status != DeploymentStatus.DELETING.value)
        .order_by(Deployment.name)
    )
    return rows.all()
