"""Every query of API tokens."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.tokens.models import ApiToken


async def get(session: AsyncSession, token_id: str) -> ApiToken | None:
    """The token with this id, if any."""
    return await session.get(ApiToken, token_id)


async def page(
    session: AsyncSession,
    *,
    workspace_id: int | None,
    deployment_id: int | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[ApiToken], int]:
    """Tokens bound to a workspace (or one deployment), or all tokens, newest first."""
    query = select(ApiToken)
    count = select(func.count()).select_from(ApiToken)
    if workspace_id is not None:
        query = query.where(ApiToken.workspace_id == workspace_id)
        count = count.where(ApiToken.workspace_id == workspace_id)
    if deployment_id is not None:
        query = query.where(ApiToken.deployment_id == deployment_id)
        count = count.where(ApiToken.deployment_id == deployment_id)
    total = await session.scalar(count)
    rows = await session.scalars(
        query.order_by(ApiToken.created_at.desc(), ApiToken.id).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)
