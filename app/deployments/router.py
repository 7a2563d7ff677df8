"""HTTP routes of deployments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.responses import JSONResponse

from app.api.errors import API_ERRORS
from app.core.context import ClockDep, ContextDep, SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.core.security import Action
from app.deployments.schemas import DeploymentCreate, DeploymentRead, DeploymentUpdate
from app.deployments.service import deployments
from app.provisioning.dependencies import TargetsDep
from app.provisioning.service import provisioning
from app.tokens.dependencies import PrincipalDep

router = APIRouter(tags=["deployments"], responses=API_ERRORS)

WorkspaceName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Workspace name")]
DeploymentName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Deployment name")]
Pagination = Annotated[PageParams, Depends(page_params)]


@router.post(
    "/workspaces/{workspace}/deployments",
    status_code=status.HTTP_201_CREATED,
    response_model=DeploymentRead,
)
async def create_deployment(
    workspace: WorkspaceName,
    data: DeploymentCreate,
    session: SessionDep,
    principal: PrincipalDep,
) -> DeploymentRead:
    """Register an Airflow deployment in a workspace."""
    deployment = await deployments.create(session, principal, workspace, data)
    return await deployments.read(session, deployment)


@router.get("/workspaces/{workspace}/deployments", response_model=Page[DeploymentRead])
async def list_workspace_deployments(
    workspace: WorkspaceName, session: SessionDep, principal: PrincipalDep, page: Pagination
) -> Page[DeploymentRead]:
    """The deployments of one workspace."""
    return await deployments.list(session, principal, page, workspace)


@router.get("/deployments", response_model=Page[DeploymentRead])
async def list_deployments(
    session: SessionDep,
    principal: PrincipalDep,
    page: Pagination,
    workspace: Annotated[
        str | None, Query(max_length=NAME_MAX_LENGTH, description="Only this workspace's")
    ] = None,
) -> Page[DeploymentRead]:
    """Every deployment visible to the caller, optionally filtered by workspace."""
    return await deployments.list(session, principal, page, workspace)


@router.get("/deployments/{name}", response_model=DeploymentRead)
async def get_deployment(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep
) -> DeploymentRead:
    """One deployment with its desired spec and status."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await deployments.read(session, deployment)


@router.patch("/deployments/{name}", response_model=DeploymentRead)
async def update_deployment(
    name: DeploymentName, data: DeploymentUpdate, session: SessionDep, principal: PrincipalDep
) -> DeploymentRead:
    """Change a deployment's desired spec."""
    deployment = await deployments.update(session, principal, name, data)
    return await deployments.read(session, deployment)


@router.delete(
    "/deployments/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={202: {"model": DeploymentRead, "description": "Teardown under way; it retries"}},
)
async def delete_deployment(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    targets: TargetsDep,
    clock: ClockDep,
    context: ContextDep,
    keep_logs: Annotated[
        bool, Query(description="Keep the deployment's logs in Elasticsearch")
    ] = False,
) -> Response:
    """Delete a deployment: remove what was provisioned for it, then it and its recipients.

    204 when everything is gone; 202 while a target could not be reached yet (the deployment
    stays `deleting` and the engine retries).
    """
    deployment = await deployments.mark_deleting(session, principal, name, keep_logs)
    view = await deployments.read(session, deployment)
    removed = await provisioning.teardown(
        session, deployment, targets, clock, context.settings.provisioning
    )
    if removed:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    view = view.model_copy(update={"status_reason": deployment.status_reason})
    return JSONResponse(view.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
