"""HTTP routes of alerting."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from app.alerting.dependencies import CatalogueDep, MailerDep
from app.alerting.schemas import (
    AlertEventRead,
    AlertRead,
    AlertStatusName,
    NotificationRead,
    RuleOverrideUpdate,
    RuleRead,
    SilenceCreate,
    SilenceRead,
    SilenceUpdate,
    WebhookPayload,
    WebhookResult,
)
from app.alerting.service import alerting
from app.api.errors import API_ERRORS, error_responses
from app.core.context import ClockDep, ContextDep, SessionDep
from app.core.errors import Forbidden
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.core.security import Action
from app.deployments.service import deployments
from app.recipients.service import recipients
from app.tokens.dependencies import PrincipalDep
from app.workspaces import repository as workspace_repository

router = APIRouter(tags=["alerts"], responses=API_ERRORS)

DeploymentName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Deployment name")]
RuleName = Annotated[str, Path(max_length=100, description="Alert rule name")]
# silences.id is a 32-bit INTEGER column; a larger id would fail in PostgreSQL, not be "not found".
SilenceId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Pagination = Annotated[PageParams, Depends(page_params)]


@router.get("/deployments/{name}/alerts", response_model=list[AlertRead])
async def list_alerts(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    clock: ClockDep,
    state: Annotated[AlertStatusName | None, Query(alias="status")] = None,
    rule: Annotated[str | None, Query(max_length=100)] = None,
) -> list[AlertRead]:
    """The deployment's alerts now: pending, firing (possibly silenced), resolved."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    workspace = await workspace_repository.get(session, deployment.workspace_id)
    assert workspace is not None
    return await alerting.alerts(session, deployment, workspace.name, clock.now(), state, rule)


@router.get("/deployments/{name}/alerts/history", response_model=Page[AlertEventRead])
async def alert_history(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    page: Pagination,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AlertEventRead]:
    """When each alert fired, repeated and resolved, newest first."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await alerting.history(session, deployment, page, rule, since, until)


@router.get("/deployments/{name}/notifications", response_model=Page[NotificationRead])
async def list_notifications(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep, page: Pagination
) -> Page[NotificationRead]:
    """Who was sent what about this deployment, when, and the delivery status."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await alerting.notifications(session, deployment, page)


@router.get("/deployments/{name}/alert-rules", response_model=list[RuleRead])
async def list_rules(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep, rules: CatalogueDep
) -> list[RuleRead]:
    """Every rule with this deployment's thresholds, durations, severities and mutes."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
    return await alerting.rules(session, deployment, rules)


@router.patch("/deployments/{name}/alert-rules/{rule}", response_model=RuleRead)
async def override_rule(
    name: DeploymentName,
    rule: RuleName,
    data: RuleOverrideUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    rules: CatalogueDep,
) -> RuleRead:
    """Override a rule's threshold, `for`, severity or mute it, for this deployment only."""
    deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_UPDATE)
    updated = await alerting.override(session, principal, deployment, rules, rule, data)
    return next(r for r in updated if r.name == rule)


@router.get("/silences", response_model=list[SilenceRead])
async def list_silences(
    session: SessionDep,
    principal: PrincipalDep,
    clock: ClockDep,
    expired: Annotated[bool, Query(description="Include expired silences")] = False,
) -> list[SilenceRead]:
    """Silences visible to the caller."""
    return await alerting.list_silences(session, principal, clock.now(), expired)


@router.post("/silences", status_code=status.HTTP_201_CREATED, response_model=SilenceRead)
async def create_silence(
    data: SilenceCreate, session: SessionDep, principal: PrincipalDep, clock: ClockDep
) -> SilenceRead:
    """Silence matching alerts for a while: no e-mails, but they still show as firing."""
    return await alerting.create_silence(session, principal, data, clock.now())


@router.get("/silences/{silence_id}", response_model=SilenceRead)
async def get_silence(
    silence_id: SilenceId, session: SessionDep, principal: PrincipalDep, clock: ClockDep
) -> SilenceRead:
    """One silence."""
    return await alerting.get_silence(session, principal, silence_id, clock.now())


@router.patch("/silences/{silence_id}", response_model=SilenceRead)
async def update_silence(
    silence_id: SilenceId,
    data: SilenceUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    clock: ClockDep,
) -> SilenceRead:
    """Extend or shorten a silence, or change its comment."""
    return await alerting.update_silence(session, principal, silence_id, data, clock.now())


@router.delete("/silences/{silence_id}", status_code=status.HTTP_204_NO_CONTENT)
async def expire_silence(
    silence_id: SilenceId, session: SessionDep, principal: PrincipalDep, clock: ClockDep
) -> None:
    """End a silence now."""
    await alerting.expire_silence(session, principal, silence_id, clock.now())


@router.post(
    "/alertmanager/webhook", response_model=WebhookResult, responses=error_responses(401, 403, 422)
)
async def alertmanager_webhook(
    payload: WebhookPayload,
    session: SessionDep,
    principal: PrincipalDep,
    clock: ClockDep,
    context: ContextDep,
) -> WebhookResult:
    """Alertmanager's webhook receiver: alerts join Sextant's own, and are delivered once."""
    if not principal.may(Action.ALERTMANAGER_WEBHOOK):
        raise Forbidden(f"role {principal.role.value} may not post alerts")
    host = context.settings.server.public_url.split("//")[-1].split("/")[0].split(":")[0]
    return await alerting.ingest_webhook(session, payload, clock.now(), context.settings, host)


@router.post(
    "/deployments/{name}/alert-recipients/{recipient_id}/test",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(503),
    tags=["alert recipients"],
)
async def send_test_email(
    name: DeploymentName,
    recipient_id: Annotated[int, Path(ge=1, le=2**62)],
    session: SessionDep,
    principal: PrincipalDep,
    clock: ClockDep,
    context: ContextDep,
    mailer: MailerDep,
) -> None:
    """Send a test e-mail to one recipient now."""
    owner = await recipients.deployment_owner(session, principal, name, write=True)
    recipient = await recipients.get(session, owner, recipient_id)
    deployment = await deployments.resolve(session, principal, name, Action.RECIPIENT_WRITE)
    await alerting.send_test(mailer, recipient, deployment, context.settings, clock.now())
