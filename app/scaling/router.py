"""HTTP routes of scaling: the policy, its decisions and the what-if simulation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.alerting.dependencies import metric_source_of
from app.api.errors import API_ERRORS, error_responses
from app.core.context import ClockDep, ContextDep, SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.core.security import Action
from app.deployments.service import deployments
from app.scaling.schemas import (
    DecisionRead,
    PolicyRead,
    PolicyUpdate,
    SimulationRequest,
    SimulationResult,
)
from app.scaling.service import scaling
from app.tokens.dependencies import PrincipalDep

router = APIRouter(tags=["scaling"], responses=API_ERRORS)

DeploymentName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Deployment name")]
Pagination = Annotated[PageParams, Depends(page_params)]


@router.get("/deployments/{name}/scaling-policy", response_model=PolicyRead)
async def read_policy(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep
) -> PolicyRead:
    """The deployment's worker scaling policy (disabled defaults if it never had one)."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await scaling.policy(session, deployment)


@router.put("/deployments/{name}/scaling-policy", response_model=PolicyRead)
async def put_policy(
    name: DeploymentName, data: PolicyUpdate, session: SessionDep, principal: PrincipalDep
) -> PolicyRead:
    """Replace the deployment's worker scaling policy."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_UPDATE)
    return await scaling.put_policy(session, principal, deployment, data)


@router.post(
    "/deployments/{name}/scaling-policy/simulate",
    response_model=SimulationResult,
    responses=error_responses(503),
)
async def simulate_policy(
    name: DeploymentName,
    data: SimulationRequest,
    session: SessionDep,
    principal: PrincipalDep,
    context: ContextDep,
    clock: ClockDep,
) -> SimulationResult:
    """Replay the deployment's real load of the last hours through a proposed policy and the
    current one: decisions, replica changes, worker-minutes, longest wait for a slot."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await scaling.simulate(
        session, deployment, data, metric_source_of(context), clock.now(),
        context.settings.scaling,
    )  # fmt: skip


@router.get("/deployments/{name}/scaling-decisions", response_model=Page[DecisionRead])
async def list_decisions(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    page: Pagination,
    reason: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[DecisionRead]:
    """The autoscaler's decisions for the deployment, newest first, with inputs and reasons."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await scaling.decisions(session, deployment, page, reason)
