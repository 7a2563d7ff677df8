"""HTTP routes for workspace admins to issue, list and revoke tokens of their workspace."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from app.api.errors import API_ERRORS
from app.core.context import ClockDep, SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.tokens.dependencies import PrincipalDep
from app.tokens.schemas import TokenCreate, TokenCreated, TokenRead
from app.tokens.service import tokens

router = APIRouter(prefix="/workspaces/{workspace}/tokens", tags=["tokens"], responses=API_ERRORS)

WorkspaceName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Workspace name")]
TokenId = Annotated[str, Path(min_length=1, max_length=32, description="Token id")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
async def create_token(
    workspace: WorkspaceName, data: TokenCreate, session: SessionDep, principal: PrincipalDep
) -> TokenCreated:
    """Issue a token bound to the workspace or one of its deployments; shown once."""
    return await tokens.create_in_workspace(session, principal, workspace, data)


@router.get("", response_model=Page[TokenRead])
async def list_tokens(
    workspace: WorkspaceName,
    session: SessionDep,
    principal: PrincipalDep,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[TokenRead]:
    """Tokens bound to the workspace (a deployment admin sees its deployment's)."""
    return await tokens.list(session, principal, page, workspace)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(
    workspace: WorkspaceName,
    token_id: TokenId,
    session: SessionDep,
    principal: PrincipalDep,
    clock: ClockDep,
) -> None:
    """Revoke a token; it stops working at once."""
    await tokens.revoke(session, principal, token_id, clock, workspace)
