"""Every query of alert recipients."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from app.core.pagination import PageParams, fetch_page
from app.recipients.models import AlertRecipient


def _owner(workspace_id: int, deployment_id: int | None) -> ColumnElement[bool]:
    if deployment_id is None:
        return (AlertRecipient.workspace_id == workspace_id) & AlertRecipient.deployment_id.is_(
            None
        )
    return AlertRecipient.deployment_id == deployment_id


async def get(
    session: AsyncSession, recipient_id: int, *, workspace_id: int, deployment_id: int | None
) -> AlertRecipient | None:
    """The recipient with this id, only if it belongs to the given owner."""
    return await session.scalar(
        select(AlertRecipient).where(
            AlertRecipient.id == recipient_id, _owner(workspace_id, deployment_id)
        )
    )


async def email_taken(
    session: AsyncSession,
    email: str,
    *,
    workspace_id: int,
    deployment_id: int | None,
    except_id: int | None = None,
) -> bool:
    """Whether the owner already has a recipient with this address."""
    query = select(func.count()).where(
        AlertRecipient.email == email, _owner(workspace_id, deployment_id)
    )
    if except_id is not None:
        query = query.where(AlertRecipient.id != except_id)
    return await session.scalar(query) != 0


async def page(
    session: AsyncSession, params: PageParams, *, workspace_id: int, deployment_id: int | None
) -> tuple[Sequence[AlertRecipient], int]:
    """An owner's recipients by address, with the total."""
    order = [AlertRecipient.email, AlertRecipient.id]
    return await fetch_page(
        session, AlertRecipient, [_owner(workspace_id, deployment_id)], order, params
    )


async def for_deployment(
    session: AsyncSession, *, workspace_id: int, deployment_id: int
) -> Sequence[AlertRecipient]:
    """Everyone who receives a deployment's alerts: its own recipients and its workspace's."""
    rows = await session.scalars(
        select(AlertRecipient)
        .where(
            (AlertRecipient.deployment_id == deployment_id)
            | (
                (AlertRecipient.workspace_id == workspace_id)
                & AlertRecipient.deployment_id.is_(None)
            )
        )
        .order_by(AlertRecipient.email)
    )
    return rows.all()
