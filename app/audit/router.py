"""HTTP route of the audit trail (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.errors import API_ERRORS
from app.audit.schemas import AuditEventRead
from app.audit.service import audit
from app.core.context import SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.core.security import Action
from app.tokens.dependencies import PrincipalDep
from app.workspaces.service import workspaces

router = APIRouter(prefix="/audit-events", tags=["audit"], responses=API_ERRORS)


@router.get("", response_model=Page[AuditEventRead])
async def list_audit_events(
    session: SessionDep,
    principal: PrincipalDep,
    page: Annotated[PageParams, Depends(page_params)],
    workspace: Annotated[str | None, Query(max_length=NAME_MAX_LENGTH)] = None,
    action: Annotated[str | None, Query(max_length=64, examples=["deployment.update"])] = None,
) -> Page[AuditEventRead]:
    """Who changed what and when, newest first, within the caller's reach."""
    workspace_id = None
    if workspace is not None:
        workspace_id = (
            await workspaces.resolve(session, principal, workspace, Action.AUDIT_READ)
        ).id
    return await audit.list(session, principal, page, workspace_id=workspace_id, action=action)
