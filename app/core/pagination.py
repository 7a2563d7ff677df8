"""Offset pagination shared by every list endpoint: parameters, one query helper, the page shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
E = TypeVar("E")


class PageParams(BaseModel):
    """Which slice of a list the caller wants."""

    limit: int = 50
    offset: int = 0


async def page_params(
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip")] = 0,
) -> PageParams:
    """Query parameters `limit` and `offset`, validated."""
    return PageParams(limit=limit, offset=offset)


class Page(BaseModel, Generic[T]):
    """One page of a list and the total it was cut from."""

    model_config = ConfigDict(from_attributes=True)

    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, items: list[T], total: int, params: PageParams) -> Page[T]:
        """A page of already-converted items."""
        return cls(items=items, total=total, limit=params.limit, offset=params.offset)


async def fetch_page(
    session: AsyncSession,
    entity: type[E],
    conditions: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    params: PageParams,
) -> tuple[Sequence[E], int]:
    """Rows of `entity` matching every condition, in order, one page of them, and their total."""
    total = await session.scalar(select(func.count()).select_from(entity).where(*conditions))
    rows = await session.scalars(
        select(entity)
        .where(*conditions)
        .order_by(*order_by)
        .limit(params.limit)
        .offset(params.offset)
    )
    return rows.all(), int(total or 0)
