"""Every query of scaling: policies, the loop's view of the fleet, decisions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageParams, fetch_page
from app.deployments.models import Deployment
from app.scaling.models import ScalingDecision, ScalingPolicy
from app.workspaces.models import Workspace


async def policy_of(session: AsyncSession, deployment_id: int) -> ScalingPolicy | None:
    """The deployment's policy row, if it ever had one."""
    return await session.scalar(
        select(ScalingPolicy).where(ScalingPolicy.deployment_id == deployment_id)
    )


async def enabled(
    session: AsyncSession,
) -> Sequence[tuple[ScalingPolicy, Deployment, str]]:
    """Every enabled policy of a deployment that is not being deleted, with its workspace."""
    rows = await session.execute(
        select(ScalingPolicy, Deployment, Workspace.name)
        .join(Deployment, Deployment.id == ScalingPolicy.deployment_id)
        .join(Workspace, Workspace.id == Deployment.workspace_id)
        .where(ScalingPolicy.enabled.is_(True), Deployment.status != "deleting")
        .order_by(Deployment.id)
    )
    return [(p, d, w) for p, d, w in rows.all()]


async def policies_by_id(session: AsyncSession, ids: Sequence[int]) -> Sequence[ScalingPolicy]:
    """The policies with these ids (one query)."""
    if not ids:
        return ()
    return (await session.scalars(select(ScalingPolicy).where(ScalingPolicy.id.in_(ids)))).all()


async def deployments_by_id(session: AsyncSession, ids: Sequence[int]) -> Sequence[Deployment]:
    """The deployments with these ids (one query)."""
    if not ids:
        return ()
    return (await session.scalars(select(Deployment).where(Deployment.id.in_(ids)))).all()


def add_decision(session: AsyncSession, decision: ScalingDecision) -> None:
    """Stage a decision for insertion."""
    session.add(decision)


async def decisions_page(
    session: AsyncSession, deployment_id: int, params: PageParams, reason: str | None
) -> tuple[Sequence[ScalingDecision], int]:
    """The deployment's decisions, newest first, with the total."""
    conditions = [ScalingDecision.deployment_id == deployment_id]
    if reason is not None:
        conditions.append(ScalingDecision.reason == reason)
    return await fetch_page(
        session,
        ScalingDecision,
        conditions,
        [ScalingDecision.decided_at.desc(), ScalingDecision.id.desc()],
        params,
    )


async def forget_decisions_before(session: AsyncSession, before: datetime) -> int:
    """Delete decisions older than `before`; how many went."""
    result = await session.execute(
        delete(ScalingDecision).where(ScalingDecision.decided_at < before)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
