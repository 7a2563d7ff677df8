"""Alert recipients of a deployment or of a whole workspace.

Both kinds live in one table; an owner is a deployment, or a workspace with no deployment. Removal
is immediate: the alerting pipeline routes from this table at send time, so a removed address gets
nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit
from app.core.errors import Conflict, NotFound
from app.core.pagination import Page, PageParams
from app.core.security import Action, Principal
from app.deployments.service import deployments
from app.recipients import repository
from app.recipients.models import AlertRecipient
from app.recipients.schemas import RecipientCreate, RecipientRead, RecipientUpdate
from app.workspaces.service import workspaces


@dataclass(frozen=True, slots=True)
class Owner:
    """The deployment or workspace a recipient belongs to."""

    workspace_id: int
    deployment_id: int | None
    label: str

    @property
    def scope(self) -> str:
        return "workspace" if self.deployment_id is None else "deployment"


def _normalize(email: str) -> str:
    # Addresses are compared case-insensitively: two spellings must not both be subscribed.
    return email.strip().lower()


class RecipientService:
    async def deployment_owner(
        self, session: AsyncSession, principal: Principal, name: str, *, write: bool
    ) -> Owner:
        """The owner for a deployment's recipients, checked for the caller."""
        action = Action.RECIPIENT_WRITE if write else Action.RECIPIENT_READ
        deployment = await deployments.resolve(session, principal, name, action)
        return Owner(deployment.workspace_id, deployment.id, f"deployment {name!r}")

    async def workspace_owner(
        self, session: AsyncSession, principal: Principal, name: str, *, write: bool
    ) -> Owner:
        """The owner for a workspace's recipients, checked for the caller."""
        action = Action.WORKSPACE_RECIPIENT_WRITE if write else Action.WORKSPACE_RECIPIENT_READ
        workspace = await workspaces.resolve(session, principal, name, action)
        return Owner(workspace.id, None, f"workspace {name!r}")

    def view(self, recipient: AlertRecipient) -> RecipientRead:
        """The API view of a recipient."""
        scope = "workspace" if recipient.deployment_id is None else "deployment"
        return RecipientRead.model_validate(
            {
                **{f: getattr(recipient, f) for f in RecipientRead.model_fields if f != "scope"},
                "scope": scope,
            }
        )

    async def add(
        self, session: AsyncSession, principal: Principal, owner: Owner, data: RecipientCreate
    ) -> AlertRecipient:
        """Subscribe an address; the same address twice for one owner is a conflict."""
        email = _normalize(data.email)
        if await repository.email_taken(
            session, email, workspace_id=owner.workspace_id, deployment_id=owner.deployment_id
        ):
            raise Conflict(f"{email} is already a recipient of {owner.label}")
        recipient = AlertRecipient(
            workspace_id=owner.workspace_id,
            deployment_id=owner.deployment_id,
            email=email,
            display_name=data.display_name,
            min_severity=data.min_severity.value,
        )
        session.add(recipient)
        await session.flush()
        audit.record(
            session,
            principal,
            action="recipient.create",
            resource_type="recipient",
            resource_id=str(recipient.id),
            workspace_id=owner.workspace_id,
            deployment_id=owner.deployment_id,
            after=recipient.snapshot(),
        )
        return recipient

    async def get(self, session: AsyncSession, owner: Owner, recipient_id: int) -> AlertRecipient:
        """One recipient of the owner."""
        recipient = await repository.get(
            session,
            recipient_id,
            workspace_id=owner.workspace_id,
            deployment_id=owner.deployment_id,
        )
        if recipient is None:
            raise NotFound(f"recipient {recipient_id} of {owner.label} not found")
        return recipient

    async def list(
        self, session: AsyncSession, owner: Owner, page: PageParams
    ) -> Page[RecipientRead]:
        """The owner's recipients."""
        rows, total = await repository.page(
            session, page, workspace_id=owner.workspace_id, deployment_id=owner.deployment_id
        )
        return Page.of([self.view(r) for r in rows], total, page)

    async def update(
        self,
        session: AsyncSession,
        principal: Principal,
        owner: Owner,
        recipient_id: int,
        data: RecipientUpdate,
    ) -> AlertRecipient:
        """Change a recipient's address, name or minimum severity."""
        recipient = await self.get(session, owner, recipient_id)
        before = recipient.snapshot()
        if data.email is not None:
            email = _normalize(data.email)
            if await repository.email_taken(
                session,
                email,
                workspace_id=owner.workspace_id,
                deployment_id=owner.deployment_id,
                except_id=recipient.id,
            ):
                raise Conflict(f"{email} is already a recipient of {owner.label}")
            recipient.email = email
        if data.display_name is not None:
            recipient.display_name = data.display_name
        if data.min_severity is not None:
            recipient.min_severity = data.min_severity.value
        await session.flush()
        audit.record(
            session,
            principal,
            action="recipient.update",
            resource_type="recipient",
            resource_id=str(recipient.id),
            workspace_id=owner.workspace_id,
            deployment_id=owner.deployment_id,
            before=before,
            after=recipient.snapshot(),
        )
        return recipient

    async def remove(
        self, session: AsyncSession, principal: Principal, owner: Owner, recipient_id: int
    ) -> None:
        """Unsubscribe a recipient, effective at once."""
        recipient = await self.get(session, owner, recipient_id)
        audit.record(
            session,
            principal,
            action="recipient.delete",
            resource_type="recipient",
            resource_id=str(recipient.id),
            workspace_id=owner.workspace_id,
            deployment_id=owner.deployment_id,
            before=recipient.snapshot(),
        )
        await session.delete(recipient)
        await session.flush()


recipients = RecipientService()
