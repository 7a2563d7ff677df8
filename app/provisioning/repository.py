"""Every query of provisioning runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.deployments.models import Deployment
from app.provisioning.models import ProvisioningRun


async def runs_of(session: AsyncSession, deployment_id: int) -> Sequence[ProvisioningRun]:
    """A deployment's runs, one per target, by target name."""
    rows = await session.scalars(
        select(ProvisioningRun)
        .where(ProvisioningRun.deployment_id == deployment_id)
        .order_by(ProvisioningRun.target)
    )
    return rows.all()


async def others_in_workspace(session: AsyncSession, deployment: Deployment) -> int:
    """How many other deployments of the same workspace are not being deleted."""
    count = await session.scalar(
        select(func.count()).where(
            Deployment.workspace_id == deployment.workspace_id,
            Deployment.id != deployment.id,
            Deployment.status != "deleting",
        )
    )
    return int(count or 0)


async def due_deployments(
    session: AsyncSession, now: datetime, targets: Sequence[str]
) -> Sequence[Deployment]:
    """Deployments with provisioning work to do, oldest first.

    That is: being deleted; missing a run for one of the targets; or with a run not applied at
    the deployment's current generation whose retry time (if any) has come.
    """
    fully_covered = (
        select(ProvisioningRun.deployment_id)
        .where(ProvisioningRun.target.in_(targets))
        .group_by(ProvisioningRun.deployment_id)
        .having(func.count(ProvisioningRun.id) == len(targets))
    )
    behind = (
        select(ProvisioningRun.id)
        .where(
            ProvisioningRun.deployment_id == Deployment.id,
            ProvisioningRun.target.in_(targets),
            or_(
                ProvisioningRun.applied_generation.is_(None),
                ProvisioningRun.applied_generation != Deployment.generation,
            ),
            or_(ProvisioningRun.next_attempt_at.is_(None), ProvisioningRun.next_attempt_at <= now),
        )
        .exists()
    )
    rows = await session.scalars(
        select(Deployment)
        .where(
            or_(
                Deployment.status == "deleting",
                Deployment.id.not_in(fully_covered),
                behind,
            )
        )
        .order_by(Deployment.id)
    )
    return rows.all()


async def reset_skipped(session: AsyncSession, targets: Sequence[str]) -> None:
    """Make runs skipped while a target was not configured due again, now that it is."""
    await session.execute(
        update(ProvisioningRun)
        .where(ProvisioningRun.status == "skipped", ProvisioningRun.target.in_(targets))
        .values(applied_generation=None, content_hash=None, next_attempt_at=None)
    )
