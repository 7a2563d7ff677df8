"""Deployments: register, list, read, change and delete, with visibility and audit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.pagination import Page, PageParams
from app.core.security import Action, Principal
from app.deployments import repository
from app.deployments.models import Deployment
from app.deployments.schemas import (
    DeploymentCreate,
    DeploymentRead,
    DeploymentStatus,
    DeploymentUpdate,
)
from app.deployments.spec import Executor
from app.deployments.validation import Problem, check_spec, merge_components
from app.workspaces import repository as workspace_repository
from app.workspaces.service import workspaces


def _not_found(name: str) -> str:
    return f"deployment {name!r} not found"


def _raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise InvalidInput(
            "; ".join(f"{field}: {message}" for field, message in problems),
            [{"field": field, "message": message} for field, message in problems],
        )


class DeploymentService:
    async def resolve(
        self, session: AsyncSession, principal: Principal, name: str, action: Action
    ) -> Deployment:
        """The named deployment if the caller may see it (else 404) and do `action` (else 403)."""
        deployment = await repository.get_by_name(session, name)
        if deployment is None:
            raise NotFound(_not_found(name))
        principal.authorize(
            action,
            workspace_id=deployment.workspace_id,
            deployment_id=deployment.id,
            not_found=_not_found(name),
        )
        return deployment

    async def read(self, session: AsyncSession, deployment: Deployment) -> DeploymentRead:
        """The API view of a deployment."""
        workspace = await workspace_repository.get(session, deployment.workspace_id)
        assert workspace is not None  # a foreign key guarantees it
        return DeploymentRead.model_validate(
            {
                **{
                    c: getattr(deployment, c)
                    for c in DeploymentRead.model_fields
                    if c != "workspace"
                },
                "workspace": workspace.name,
            }
        )

    async def create(
        self,
        session: AsyncSession,
        principal: Principal,
        workspace_name: str,
        data: DeploymentCreate,
    ) -> Deployment:
        """Register a deployment in a workspace; it starts `pending` until provisioned."""
        workspace = await workspaces.resolve(
            session, principal, workspace_name, Action.DEPLOYMENT_CREATE
        )
        components, problems = merge_components(data.executor, {}, data.components)
        problems += check_spec(data.executor, components, data.min_workers, data.max_workers)
        _raise_problems(problems)
        if await repository.name_taken(session, data.name):
            raise Conflict(f"deployment {data.name!r} already exists")
        deployment = Deployment(
            name=data.name,
            workspace_id=workspace.id,
            description=data.description,
            executor=data.executor.value,
            airflow_version=data.airflow_version,
            components=components,
            worker_concurrency=data.worker_concurrency,
            min_workers=data.min_workers,
            max_workers=data.max_workers,
            log_retention_days=data.log_retention_days,
            status=DeploymentStatus.PENDING.value,
            status_reason="waiting to be provisioned",
        )
        session.add(deployment)
        await session.flush()
        audit.record(
            session,
            principal,
            action="deployment.create",
            resource_type="deployment",
            resource_id=deployment.name,
            workspace_id=workspace.id,
            deployment_id=deployment.id,
            after=deployment.snapshot(),
        )
        return deployment

    async def list(
        self,
        session: AsyncSession,
        principal: Principal,
        page: PageParams,
        workspace_name: str | None = None,
    ) -> Page[DeploymentRead]:
        """The deployments visible to the caller, optionally in one workspace."""
        workspace_id, deployment_id = principal.reach()
        if workspace_name is not None:
            workspace = await workspaces.resolve(
                session, principal, workspace_name, Action.DEPLOYMENT_READ
            )
            workspace_id = workspace.id
        rows, total = await repository.page(
            session, page, workspace_id=workspace_id, deployment_id=deployment_id
        )
        return Page.of([await self.read(session, d) for d in rows], total, page)

    async def update(
        self, session: AsyncSession, principal: Principal, name: str, data: DeploymentUpdate
    ) -> Deployment:
        """Change the desired spec; the whole merged result is validated before anything changes."""
        deployment = await self.resolve(session, principal, name, Action.DEPLOYMENT_UPDATE)
        if deployment.status == DeploymentStatus.DELETING:
            raise Conflict(f"deployment {name!r} is being deleted")
        before = deployment.snapshot()
        executor = data.executor or Executor(deployment.executor)
        min_workers = deployment.min_workers if data.min_workers is None else data.min_workers
        max_workers = deployment.max_workers if data.max_workers is None else data.max_workers
        components, problems = merge_components(executor, deployment.components, data.components)
        problems += check_spec(executor, components, min_workers, max_workers)
        _raise_problems(problems)
        if data.description is not None:
            deployment.description = data.description
        if data.airflow_version is not None:
            deployment.airflow_version = data.airflow_version
        if data.worker_concurrency is not None:
            deployment.worker_concurrency = data.worker_concurrency
        if data.log_retention_days is not None:
            deployment.log_retention_days = data.log_retention_days
        deployment.executor = executor.value
        deployment.components = components
        deployment.min_workers = min_workers
        deployment.max_workers = max_workers
        after = deployment.snapshot()
        if after != before:
            deployment.generation += 1
            await session.flush()
            audit.record(
                session,
                principal,
                action="deployment.update",
                resource_type="deployment",
                resource_id=deployment.name,
                workspace_id=deployment.workspace_id,
                deployment_id=deployment.id,
                before=before,
                after=after,
            )
        return deployment

    async def mark_deleting(
        self, session: AsyncSession, principal: Principal, name: str, keep_logs: bool = False
    ) -> Deployment:
        """Start deleting a deployment; the provisioning engine tears it down and removes it.

        Its recipients and bound tokens go with the row, once everything provisioned for it has
        been removed.
        """
        deployment = await self.resolve(session, principal, name, Action.DEPLOYMENT_DELETE)
        if deployment.status == DeploymentStatus.DELETING:
            return deployment
        audit.record(
            session,
            principal,
            action="deployment.delete",
            resource_type="deployment",
            resource_id=deployment.name,
            workspace_id=deployment.workspace_id,
            deployment_id=deployment.id,
            before=deployment.snapshot(),
        )
        deployment.status = DeploymentStatus.DELETING.value
        deployment.keep_logs = keep_logs
        deployment.status_reason = "removing what was provisioned"
        await session.flush()
        return deployment


deployments = DeploymentService()
