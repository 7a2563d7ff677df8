"""HTTP routes of alert recipients, on a deployment and on a whole workspace.

Both collections behave the same; they differ only in how the owner is resolved from the path,
so one set of routes is registered per owner kind.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, status

from app.api.errors import API_ERRORS
from app.core.context import SessionDep
from app.core.names import NAME_MAX_LENGTH
from app.core.pagination import Page, PageParams, page_params
from app.recipients.schemas import RecipientCreate, RecipientRead, RecipientUpdate
from app.recipients.service import Owner, recipients
from app.tokens.dependencies import PrincipalDep

router = APIRouter(tags=["alert recipients"], responses=API_ERRORS)

WorkspaceName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Workspace name")]
DeploymentName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Deployment name")]
RecipientId = Annotated[int, Path(ge=1, le=2**62, description="Recipient id")]
Pagination = Annotated[PageParams, Depends(page_params)]


async def _deployment_reader(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep
) -> Owner:
    return await recipients.deployment_owner(session, principal, name, write=False)


async def _deployment_writer(
    name: DeploymentName, session: SessionDep, principal: PrincipalDep
) -> Owner:
    return await recipients.deployment_owner(session, principal, name, write=True)


async def _workspace_reader(
    workspace: WorkspaceName, session: SessionDep, principal: PrincipalDep
) -> Owner:
    return await recipients.workspace_owner(session, principal, workspace, write=False)


async def _workspace_writer(
    workspace: WorkspaceName, session: SessionDep, principal: PrincipalDep
) -> Owner:
    return await recipients.workspace_owner(session, principal, workspace, write=True)


OwnerResolver = Callable[..., Awaitable[Owner]]


def _register(path: str, kind: str, reader: OwnerResolver, writer: OwnerResolver) -> None:
    Reader = Annotated[Owner, Depends(reader)]
    Writer = Annotated[Owner, Depends(writer)]
    item = path + "/{recipient_id}"

    async def add(
        owner: Writer, data: RecipientCreate, session: SessionDep, principal: PrincipalDep
    ) -> RecipientRead:
        return recipients.view(await recipients.add(session, principal, owner, data))

    async def list_(owner: Reader, session: SessionDep, page: Pagination) -> Page[RecipientRead]:
        return await recipients.list(session, owner, page)

    async def get(owner: Reader, recipient_id: RecipientId, session: SessionDep) -> RecipientRead:
        return recipients.view(await recipients.get(session, owner, recipient_id))

    async def update(
        owner: Writer,
        recipient_id: RecipientId,
        data: RecipientUpdate,
        session: SessionDep,
        principal: PrincipalDep,
    ) -> RecipientRead:
        return recipients.view(
            await recipients.update(session, principal, owner, recipient_id, data)
        )

    async def remove(
        owner: Writer, recipient_id: RecipientId, session: SessionDep, principal: PrincipalDep
    ) -> None:
        await recipients.remove(session, principal, owner, recipient_id)

    routes: list[tuple[str, str, Callable[..., Any], str, dict[str, Any]]] = [
        (
            "POST",
            path,
            add,
            f"Subscribe an address to {kind} alerts",
            {"status_code": status.HTTP_201_CREATED, "response_model": RecipientRead},
        ),
        ("GET", path, list_, f"List {kind} recipients", {"response_model": Page[RecipientRead]}),
        ("GET", item, get, f"One {kind} recipient", {"response_model": RecipientRead}),
        ("PATCH", item, update, f"Change a {kind} recipient", {"response_model": RecipientRead}),
        (
            "DELETE",
            item,
            remove,
            f"Unsubscribe a {kind} recipient, effective at once",
            {"status_code": status.HTTP_204_NO_CONTENT},
        ),
    ]
    for method, route_path, endpoint, summary, options in routes:
        name = f"{endpoint.__name__.rstrip('_')}_{kind.replace(' ', '_')}_recipient"
        router.add_api_route(
            route_path,
            endpoint,
            methods=[method],
            summary=summary,
            name=name,
            operation_id=name,
            **options,
        )


_register(
    "/deployments/{name}/alert-recipients", "deployment", _deployment_reader, _deployment_writer
)
_register(
    "/workspaces/{workspace}/alert-recipients", "workspace", _workspace_reader, _workspace_writer
)
