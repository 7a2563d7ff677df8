"""Workspaces: create, list, read, rename, delete — with visibility and audit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit
from app.core.errors import Conflict, Forbidden, NotFound
from app.core.pagination import Page, PageParams
from app.core.security import Action, Principal
from app.deployments import repository as deployment_repository
from app.workspaces import repository
from app.workspaces.models import Workspace
from app.workspaces.schemas import WorkspaceCreate, WorkspaceRead, WorkspaceUpdate


def _not_found(name: str) -> str:
    return f"workspace {name!r} not found"


class WorkspaceService:
    async def resolve(
        self, session: AsyncSession, principal: Principal, name: str, action: Action
    ) -> Workspace:
        """The named workspace if the caller may see it (else 404) and do `action` (else 403)."""
        workspace = await repository.get_by_name(session, name)
        if workspace is None:
            raise NotFound(_not_found(name))
        principal.authorize(action, workspace_id=workspace.id, not_found=_not_found(name))
        return workspace

    async def create(
        self, session: AsyncSession, principal: Principal, data: WorkspaceCreate
    ) -> Workspace:
        """A new workspace; only system admins create them."""
        if not principal.may(Action.WORKSPACE_CREATE):
            raise Forbidden(f"role {principal.role.value} may not create workspaces")
        if await repository.name_taken(session, data.name):
            raise Conflict(f"workspace {data.name!r} already exists")
        workspace = Workspace(name=data.name, description=data.description)
        session.add(workspace)
        await session.flush()
        audit.record(
            session,
            principal,
            action="workspace.create",
            resource_type="workspace",
            resource_id=workspace.name,
            workspace_id=workspace.id,
            after=workspace.snapshot(),
        )
        return workspace

    async def list(
        self, session: AsyncSession, principal: Principal, page: PageParams
    ) -> Page[WorkspaceRead]:
        """The workspaces visible to the caller."""
        only_id, _ = principal.reach()
        rows, total = await repository.page(session, page, only_id=only_id)
        return Page.of([WorkspaceRead.model_validate(w) for w in rows], total, page)

    async def update(
        self, session: AsyncSession, principal: Principal, name: str, data: WorkspaceUpdate
    ) -> Workspace:
        """Rename a workspace or change its description."""
        workspace = await self.resolve(session, principal, name, Action.WORKSPACE_UPDATE)
        before = workspace.snapshot()
        if data.name is not None and data.name != workspace.name:
            if await repository.name_taken(session, data.name):
                raise Conflict(f"workspace {data.name!r} already exists")
            workspace.name = data.name
        if data.description is not None:
            workspace.description = data.description
        await session.flush()
        audit.record(
            session,
            principal,
            action="workspace.update",
            resource_type="workspace",
            resource_id=workspace.name,
            workspace_id=workspace.id,
            before=before,
            after=workspace.snapshot(),
        )
        return workspace

    async def delete(self, session: AsyncSession, principal: Principal, name: str) -> None:
        """Delete an empty workspace; one that still has deployments is a conflict."""
        workspace = await self.resolve(session, principal, name, Action.WORKSPACE_DELETE)
        remaining = await deployment_repository.count_in_workspace(session, workspace.id)
        if remaining:
            raise Conflict(
                f"workspace {name!r} still has {remaining} deployment(s); delete them first"
            )
        audit.record(
            session,
            principal,
            action="workspace.delete",
            resource_type="workspace",
            resource_id=workspace.name,
            workspace_id=workspace.id,
            before=workspace.snapshot(),
        )
        await session.delete(workspace)
        await session.flush()


workspaces = WorkspaceService()
