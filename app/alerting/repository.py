"""Every query of alerting: alerts, events, the outbox, silences and rule overrides."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerting.models import Alert, AlertEvent, AlertRuleOverride, Notification, Silence
from app.deployments.models import Deployment
from app.recipients.models import AlertRecipient
from app.workspaces.models import Workspace


async def watched_deployments(session: AsyncSession) -> Sequence[tuple[Deployment, str]]:
    """Every deployment that is not being deleted, with its workspace's name."""
    rows = await session.execute(
        select(Deployment, Workspace.name)
        .join(Workspace, Workspace.id == Deployment.workspace_id)
        .where(Deployment.status != "deleting")
        .order_by(Deployment.id)
    )
    return [(d, w) for d, w in rows.all()]


async def overrides(session: AsyncSession) -> Sequence[AlertRuleOverride]:
    """Every rule override of every deployment."""
    return (await session.scalars(select(AlertRuleOverride))).all()


async def overrides_of(session: AsyncSession, deployment_id: int) -> Sequence[AlertRuleOverride]:
    """A deployment's rule overrides."""
    rows = await session.scalars(
        select(AlertRuleOverride).where(AlertRuleOverride.deployment_id == deployment_id)
    )
    return rows.all()


async def alerts(session: AsyncSession) -> Sequence[Alert]:
    """Every alert row (rows exist only for alerts that were ever active)."""
    return (await session.scalars(select(Alert))).all()


async def alerts_of(
    session: AsyncSession, deployment_id: int, status: str | None, rule: str | None
) -> Sequence[Alert]:
    """A deployment's alerts, optionally by status and rule."""
    query = select(Alert).where(Alert.deployment_id == deployment_id)
    if status is not None:
        query = query.where(Alert.status == status)
    if rule is not None:
        query = query.where(Alert.rule == rule)
    return (await session.scalars(query.order_by(Alert.rule))).all()


async def events_of(
    session: AsyncSession,
    deployment_id: int,
    rule: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[AlertEvent], int]:
    """A deployment's alert history, newest first."""
    conditions = [AlertEvent.deployment_id == deployment_id]
    if rule is not None:
        conditions.append(AlertEvent.rule == rule)
    if since is not None:
        conditions.append(AlertEvent.at >= since)
    if until is not None:
        conditions.append(AlertEvent.at < until)
    total = await session.scalar(select(func.count()).select_from(AlertEvent).where(*conditions))
    rows = await session.scalars(
        select(AlertEvent)
        .where(*conditions)
        .order_by(AlertEvent.at.desc(), AlertEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), int(total or 0)


async def last_notices(session: AsyncSession, alert_ids: Sequence[int]) -> Sequence[Notification]:
    """The latest notification per (alert, address) for the given alerts."""
    if not alert_ids:
        return []
    latest = (
        select(Notification.alert_id, Notification.email, func.max(Notification.id).label("id"))
        .where(Notification.alert_id.in_(alert_ids), Notification.status != "cancelled")
        .group_by(Notification.alert_id, Notification.email)
        .subquery()
    )
    rows = await session.scalars(select(Notification).join(latest, Notification.id == latest.c.id))
    return rows.all()


async def active_silences(session: AsyncSession, now: datetime) -> Sequence[Silence]:
    """Silences in force now."""
    rows = await session.scalars(
        select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now)
    )
    return rows.all()


async def claim_due(
    session: AsyncSession, holder: str, now: datetime, until: datetime, limit: int
) -> Sequence[Notification]:
    """Claim up to `limit` pending notifications whose time has come, for this holder only."""
    free = or_(Notification.claimed_until.is_(None), Notification.claimed_until <= now)
    candidates = (
        select(Notification.id)
        .where(Notification.status == "pending", Notification.next_attempt_at <= now, free)
        .order_by(Notification.next_attempt_at, Notification.id)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list((await session.scalars(candidates)).all())
    if not ids:
        return []
    # The conditional UPDATE is what makes the claim exclusive, on SQLite as on PostgreSQL.
    await session.execute(
        update(Notification)
        .where(Notification.id.in_(ids), and_(Notification.status == "pending", free))
        .values(claimed_by=holder, claimed_until=until)
    )
    rows = await session.scalars(
        select(Notification)
        .where(Notification.id.in_(ids), Notification.claimed_by == holder)
        .order_by(Notification.id)
    )
    return rows.all()


async def record_verdict(
    session: AsyncSession, notification_id: int, holder: str, values: Mapping[str, object]
) -> bool:
    """Write a delivery verdict if `holder` still owns the row's claim; False if it does not."""
    result = await session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.claimed_by == holder)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def recipients_by_id(
    session: AsyncSession, ids: Collection[int]
) -> Mapping[int, AlertRecipient]:
    """The recipients with these ids that still exist."""
    if not ids:
        return {}
    rows = await session.scalars(select(AlertRecipient).where(AlertRecipient.id.in_(ids)))
    return {row.id: row for row in rows.all()}


async def notifications_of(
    session: AsyncSession, deployment_id: int, limit: int, offset: int
) -> tuple[Sequence[Notification], int]:
    """A deployment's notification log, newest first."""
    condition = Notification.deployment_id == deployment_id
    total = await session.scalar(select(func.count()).select_from(Notification).where(condition))
    rows = await session.scalars(
        select(Notification)
        .where(condition)
        .order_by(Notification.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), int(total or 0)
