"""HTTP routes of a deployment's provisioning state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.errors import API_ERRORS
from app.core.context import ClockDep, ContextDep, SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.security import Action
from app.deployments.service import deployments
from app.provisioning.dependencies import TargetsDep
from app.provisioning.schemas import ProvisioningRead
from app.provisioning.service import provisioning
from app.tokens.dependencies import PrincipalDep

router = APIRouter(tags=["provisioning"], responses=API_ERRORS)

DeploymentName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Deployment name")]


@router.get("/deployments/{name}/provisioning", response_model=ProvisioningRead)
async def get_provisioning(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep
) -> ProvisioningRead:
    """Per target: what was applied, its hash, status, error and attempts."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await provisioning.state(session, deployment)


@router.post("/deployments/{name}/provisioning/sync", response_model=ProvisioningRead)
async def sync_provisioning(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    targets: TargetsDep,
    clock: ClockDep,
    context: ContextDep,
    force: Annotated[
        bool, Query(description="Apply every target even if its content is unchanged")
    ] = False,
) -> ProvisioningRead:
    """Reconcile the deployment now instead of waiting for the next round."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_UPDATE)
    await provisioning.reconcile(
        session, deployment, targets, clock, context.settings.provisioning, force=force
    )
    return await provisioning.state(session, deployment)
