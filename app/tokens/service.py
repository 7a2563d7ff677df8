"""Issuing, authenticating, listing and revoking API tokens.

Callers may only hand out roles within their own reach: a workspace admin any role of its
workspace, a deployment admin deployment roles of its deployment, and only the CLI (acting as
system administrator) or a system admin can create system admins.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit
from app.core.clock import Clock
from app.core.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from app.core.pagination import Page, PageParams
from app.core.security import (
    Action,
    Principal,
    Role,
    Scope,
    issue_token,
    secret_matches,
    split_token,
)
from app.deployments import repository as deployment_repository
from app.tokens import repository
from app.tokens.models import ApiToken
from app.tokens.schemas import TokenCreate, TokenCreated, TokenRead
from app.workspaces import repository as workspace_repository
from app.workspaces.service import workspaces

# Recording every use would turn each read into a write; a minute's precision is enough.
LAST_USED_PRECISION = timedelta(minutes=1)

CLI_PRINCIPAL = Principal(token_id="", name="cli", role=Role.SYSTEM_ADMIN)
"""Whoever runs the `sextant` CLI on the server acts as system administrator."""

_INVALID = "invalid or revoked token"


class TokenService:
    async def authenticate(
        self, session: AsyncSession, authorization: str | None, clock: Clock
    ) -> Principal:
        """The principal behind an `Authorization: Bearer` header, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated("missing bearer token")
        scheme, _, plaintext = authorization.partition(" ")
        if scheme.lower() != "bearer" or not plaintext.strip():
            raise Unauthenticated("expected 'Authorization: Bearer <token>'")
        parts = split_token(plaintext.strip())
        if parts is None:
            raise Unauthenticated(_INVALID)
        token_id, secret = parts
        token = await repository.get(session, token_id)
        if token is None or token.revoked_at is not None:
            raise Unauthenticated(_INVALID)
        if not secret_matches(secret, token.secret_hash):
            raise Unauthenticated(_INVALID)
        now = clock.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            token.last_used_at = now
        return Principal(
            token_id=token.id,
            name=token.name,
            role=Role(token.role),
            workspace_id=token.workspace_id,
            deployment_id=token.deployment_id,
        )

    async def view(self, session: AsyncSession, token: ApiToken) -> TokenRead:
        """The API view of a token (never its secret)."""
        workspace = (
            await workspace_repository.get(session, token.workspace_id)
            if token.workspace_id is not None
            else None
        )
        deployment = (
            await deployment_repository.get(session, token.deployment_id)
            if token.deployment_id is not None
            else None
        )
        return TokenRead(
            id=token.id,
            name=token.name,
            role=Role(token.role),
            workspace=workspace.name if workspace else None,
            deployment=deployment.name if deployment else None,
            created_by=token.created_by,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )

    async def create(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        name: str,
        role: Role,
        workspace_name: str | None,
        deployment_name: str | None,
    ) -> TokenCreated:
        """Issue a token; the plaintext is in the answer and nowhere else."""
        if not principal.can_grant(role):
            raise Forbidden(f"role {principal.role.value} may not grant {role.value}")
        workspace_id, deployment_id = await self._binding(
            session, principal, role, workspace_name, deployment_name
        )
        issued = issue_token()
        token = ApiToken(
            id=issued.token_id,
            name=name,
            role=role.value,
            workspace_id=workspace_id,
            deployment_id=deployment_id,
            secret_hash=issued.secret_hash,
            created_by=principal.name,
        )
        session.add(token)
        await session.flush()
        audit.record(
            session,
            principal,
            action="token.create",
            resource_type="token",
            resource_id=token.id,
            workspace_id=workspace_id,
            deployment_id=deployment_id,
            after=token.snapshot(),
        )
        view = await self.view(session, token)
        return TokenCreated(**view.model_dump(), token=issued.plaintext)

    async def _binding(
        self,
        session: AsyncSession,
        principal: Principal,
        role: Role,
        workspace_name: str | None,
        deployment_name: str | None,
    ) -> tuple[int | None, int | None]:
        if role.scope in (Scope.SYSTEM, Scope.NONE):
            if workspace_name or deployment_name:
                raise InvalidInput.for_field("role", f"{role.value} is not bound to a workspace")
            return None, None
        if workspace_name is None and role.scope is Scope.DEPLOYMENT and deployment_name:
            # A deployment names its workspace; asking for both would only invite mismatches.
            found = await deployment_repository.get_by_name(session, deployment_name)
            if found is None or not principal.can_see(found.workspace_id, found.id):
                raise NotFound(f"deployment {deployment_name!r} not found")
            owner = await workspace_repository.get(session, found.workspace_id)
            workspace_name = owner.name if owner else None
        if workspace_name is None:
            raise InvalidInput.for_field("workspace", f"{role.value} needs a workspace")
        workspace = await workspaces.resolve(
            session, principal, workspace_name, Action.TOKEN_MANAGE
        )
        if role.scope is Scope.WORKSPACE:
            if deployment_name is not None:
                raise InvalidInput.for_field(
                    "deployment", f"{role.value} is bound to a workspace, not a deployment"
                )
            return workspace.id, None
        if deployment_name is None:
            raise InvalidInput.for_field("deployment", f"{role.value} needs a deployment")
        deployment = await deployment_repository.get_by_name(session, deployment_name)
        missing = f"deployment {deployment_name!r} not found"
        if deployment is None or deployment.workspace_id != workspace.id:
            raise NotFound(missing)
        if not principal.can_see(workspace.id, deployment.id):
            raise NotFound(missing)
        return workspace.id, deployment.id

    async def create_in_workspace(
        self, session: AsyncSession, principal: Principal, workspace_name: str, data: TokenCreate
    ) -> TokenCreated:
        """Issue a token bound to a workspace, or to a deployment in it."""
        return await self.create(
            session,
            principal,
            name=data.name,
            role=data.role,
            workspace_name=workspace_name,
            deployment_name=data.deployment,
        )

    async def list(
        self,
        session: AsyncSession,
        principal: Principal,
        page: PageParams,
        workspace_name: str | None = None,
    ) -> Page[TokenRead]:
        """Tokens the caller manages: a workspace's (or its deployment's), or all for the CLI."""
        workspace_id, deployment_id = principal.reach()
        if workspace_name is not None:
            workspace = await workspaces.resolve(
                session, principal, workspace_name, Action.TOKEN_MANAGE
            )
            workspace_id = workspace.id
        elif principal.role is not Role.SYSTEM_ADMIN:
            raise Forbidden("only system administrators list every token")
        rows, total = await repository.page(
            session, page, workspace_id=workspace_id, deployment_id=deployment_id
        )
        return Page.of([await self.view(session, t) for t in rows], total, page)

    async def revoke(
        self,
        session: AsyncSession,
        principal: Principal,
        token_id: str,
        clock: Clock,
        workspace_name: str | None = None,
    ) -> ApiToken:
        """Revoke a token at once; revoking twice is harmless."""
        missing = f"token {token_id!r} not found"
        token = await repository.get(session, token_id)
        if token is None:
            raise NotFound(missing)
        if workspace_name is not None:
            workspace = await workspaces.resolve(
                session, principal, workspace_name, Action.TOKEN_MANAGE
            )
            if token.workspace_id != workspace.id:
                raise NotFound(missing)
            if principal.role.scope is Scope.DEPLOYMENT and (
                token.deployment_id != principal.deployment_id
            ):
                raise NotFound(missing)
        elif principal.role is not Role.SYSTEM_ADMIN:
            raise NotFound(missing)
        if token.revoked_at is None:
            before = token.snapshot()
            token.revoked_at = clock.now()
            await session.flush()
            audit.record(
                session,
                principal,
                action="token.revoke",
                resource_type="token",
                resource_id=token.id,
                workspace_id=token.workspace_id,
                deployment_id=token.deployment_id,
                before=before,
                after=token.snapshot(),
            )
        return token


tokens = TokenService()
