"""Every query of API tokens."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageParams, fetch_page
from app.tokens.models import ApiToken


async def get(session: AsyncSession, token_id: str) -> ApiToken | None:
    """The token with this id, if any."""
    return await session.get(ApiToken, token_id)


async def page(
    session: AsyncSession,
    params: PageParams,
    *,
    workspace_id: int | None,
    deployment_id: int | None,
) -> tuple[Sequence[ApiToken], int]:
    """Tokens bound to a workspace (or one deployment), or all tokens, newest first."""
    conditions = []
    if workspace_id is not None:
        conditions.append(ApiToken.workspace_id == workspace_id)
    if deployment_id is not None:
        conditions.append(ApiToken.deployment_id == deployment_id)
    order = [ApiToken.created_at.desc(), ApiToken.id]
    return await fetch_page(session, ApiToken, conditions, order, params)
