"""HTTP routes of workspaces (thin: validate, call the service, shape the answer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from app.api.errors import API_ERRORS
from app.core.context import SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.core.security import Action
from app.tokens.dependencies import PrincipalDep
from app.workspaces.schemas import WorkspaceCreate, WorkspaceRead, WorkspaceUpdate
from app.workspaces.service import workspaces

router = APIRouter(prefix="/workspaces", tags=["workspaces"], responses=API_ERRORS)

WorkspaceName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Workspace name")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkspaceRead)
async def create_workspace(
    data: WorkspaceCreate, session: SessionDep, principal: PrincipalDep
) -> WorkspaceRead:
    """Create a workspace (system administrators)."""
    workspace = await workspaces.create(session, principal, data)
    return WorkspaceRead.model_validate(workspace)


@router.get("", response_model=Page[WorkspaceRead])
async def list_workspaces(
    session: SessionDep,
    principal: PrincipalDep,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[WorkspaceRead]:
    """The workspaces visible to the caller."""
    return await workspaces.list(session, principal, page)


@router.get("/{workspace}", response_model=WorkspaceRead)
async def get_workspace(
    workspace: WorkspaceName, session: SessionDep, principal: PrincipalDep
) -> WorkspaceRead:
    """One workspace."""
    found = await workspaces.resolve(session, principal, workspace, Action.WORKSPACE_READ)
    return WorkspaceRead.model_validate(found)


@router.patch("/{workspace}", response_model=WorkspaceRead)
async def update_workspace(
    workspace: WorkspaceName,
    data: WorkspaceUpdate,
    session: SessionDep,
    principal: PrincipalDep,
) -> WorkspaceRead:
    """Rename a workspace or change its description."""
    return WorkspaceRead.model_validate(
        await workspaces.update(session, principal, workspace, data)
    )


@router.delete("/{workspace}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_workspace(
    workspace: WorkspaceName, session: SessionDep, principal: PrincipalDep
) -> None:
    """Delete a workspace that has no deployments left (409 otherwise)."""
    await workspaces.delete(session, principal, workspace)
