"""The request dependency that turns a bearer token into a Principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from app.core.context import ClockDep, SessionDep
from app.core.security import Principal
from app.tokens.service import tokens


async def get_principal(
    session: SessionDep,
    clock: ClockDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """The authenticated caller; 401 without a valid, unrevoked token."""
    return await tokens.authenticate(session, authorization, clock)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
