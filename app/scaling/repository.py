"""Every query of scaling: policies, the loop's view of the fleet, decisions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select
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


class LoopPolicy(NamedTuple):
    """The columns of a policy the decision loop reads (no ORM object: the loop reads them all,
    every round)."""

    id: int
    deployment_id: int
    min_workers: int | None
    max_workers: int | None
    tasks_per_worker: int | None
    scale_up_limit: int
    scale_up_limit_kind: str
    scale_down_window_seconds: int
    scale_down_window_max_seconds: int
    queue: str | None
    recommendations: list[Any] | None
    damping: dict[str, Any] | None
    last_reason: str | None
    last_desired: int | None


class LoopDeployment(NamedTuple):
    """The columns of a deployment the decision loop reads, with its workspace's name."""

    id: int
    name: str
    executor: str
    min_workers: int
    max_workers: int
    worker_concurrency: int
    # components.workers.replicas, read in the database rather than the whole spec here.
    replicas: int | None
    workspace: str


_POLICY_COLUMNS = [getattr(ScalingPolicy, name) for name in LoopPolicy._fields]
_DEPLOYMENT_COLUMNS = [
    Deployment.id,
    Deployment.name,
    Deployment.executor,
    Deployment.min_workers,
    Deployment.max_workers,
    Deployment.worker_concurrency,
    Deployment.components["workers"]["replicas"].as_integer(),
    Workspace.name,
]


async def enabled(session: AsyncSession) -> list[tuple[LoopPolicy, LoopDeployment]]:
    """Every enabled policy of a deployment that is not being deleted, with its deployment."""
    rows = await session.execute(
        select(*_POLICY_COLUMNS, *_DEPLOYMENT_COLUMNS)
        .join(Deployment, Deployment.id == ScalingPolicy.deployment_id)
        .join(Workspace, Workspace.id == Deployment.workspace_id)
        .where(ScalingPolicy.enabled.is_(True), Deployment.status != "deleting")
        .order_by(Deployment.id)
    )
    split = len(_POLICY_COLUMNS)
    return [
        (LoopPolicy._make(row[:split]), LoopDeployment._make(row[split:])) for row in rows.all()
    ]


async def fingerprint(session: AsyncSession) -> tuple[Any, ...]:
    """What changes when anything `enabled` returns may have changed (other than the loop's own
    state): how many policies there are, and the newest `updated_at` of policies, deployments and
    workspaces (a deployment marked for deletion or deleted moves one or the other)."""
    newest = [
        select(func.max(table.updated_at)).scalar_subquery()
        for table in (ScalingPolicy, Deployment, Workspace)
    ]
    count = select(func.count()).select_from(ScalingPolicy).scalar_subquery()
    return tuple((await session.execute(select(count, *newest))).one())


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
