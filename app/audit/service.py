"""Recording and reading the audit trail.

Every service that changes something calls `audit.record` in the same transaction as the change,
so a change and its record commit or roll back together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import repository
from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventRead
from app.core.errors import Forbidden, NotFound
from app.core.logging import request_id_var
from app.core.pagination import Page, PageParams
from app.core.security import Action, Principal, Scope


class AuditService:
    def record(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        action: str,
        resource_type: str,
        resource_id: str,
        workspace_id: int | None = None,
        deployment_id: int | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Stage one audit event for a change made by `principal`."""
        repository.add(
            session,
            AuditEvent(
                actor_token_id=principal.token_id or None,
                actor_name=principal.name,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                workspace_id=workspace_id,
                deployment_id=deployment_id,
                before=before,
                after=after,
                request_id=request_id_var.get(),
            ),
        )

    async def list(
        self,
        session: AsyncSession,
        principal: Principal,
        page: PageParams,
        *,
        workspace_id: int | None = None,
        action: str | None = None,
    ) -> Page[AuditEventRead]:
        """The events the caller may read: all for system admins, its own scope for the others."""
        if principal.role.scope is not Scope.SYSTEM:
            if not principal.may(Action.AUDIT_READ):
                raise Forbidden(f"role {principal.role.value} may not read the audit trail")
            if workspace_id is not None and workspace_id != principal.workspace_id:
                raise NotFound("workspace not found")
        reach_workspace, deployment_id = principal.reach()
        rows, total = await repository.page(
            session,
            page,
            workspace_id=reach_workspace or workspace_id,
            deployment_id=deployment_id,
            action=action,
        )
        return Page.of([AuditEventRead.model_validate(r) for r in rows], total, page)


audit = AuditService()
