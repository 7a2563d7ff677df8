"""Tokens through the API: issued once, stored hashed, never above the issuer's reach."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from app.tokens.models import ApiToken
from tests.conftest import TokenFactory
from tests.factories import create_deployment, create_workspace

TOKENS = "/api/v1/workspaces/team-a/tokens"


@pytest.fixture
async def workspace(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await create_workspace(client, admin, "team-a")
    await create_deployment(client, admin, "team-a", "a-etl")
    await create_workspace(client, admin, "team-b")
    await create_deployment(client, admin, "team-b", "b-etl")
    return "team-a"


@pytest.mark.usefixtures("workspace")
async def test_workspace_admin_issues_a_working_token_shown_once(
    client: httpx.AsyncClient, app: object, make_token: TokenFactory
) -> None:
    workspace_admin = await make_token("workspace-admin", workspace="team-a")

    created = await client.post(
        TOKENS, json={"name": "ci", "role": "deployment-viewer", "deployment": "a-etl"},
        headers=workspace_admin,
    )  # fmt: skip

    assert created.status_code == 201
    plaintext = created.json()["token"]
    issued = {"Authorization": f"Bearer {plaintext}"}
    assert (await client.get("/api/v1/deployments/a-etl", headers=issued)).status_code == 200
    listed = (await client.get(TOKENS, headers=workspace_admin)).json()
    assert all("token" not in t for t in listed["items"])
    async with app.state.context.sessionmaker() as session:  # type: ignore[attr-defined]
        stored = await session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
    assert stored is not None
    secret = plaintext.split("_", 2)[2]
    assert secret not in stored.secret_hash


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(
    ("issuer", "body", "status"),
    [
        ("workspace-admin", {"role": "system-admin"}, 403),
        ("workspace-editor", {"role": "workspace-viewer"}, 403),
        ("deployment-admin", {"role": "workspace-viewer"}, 403),
        ("deployment-admin", {"role": "deployment-viewer", "deployment": "a-etl"}, 201),
        ("workspace-admin", {"role": "deployment-viewer", "deployment": "b-etl"}, 404),
        ("workspace-admin", {"role": "deployment-viewer"}, 422),
        ("workspace-admin", {"role": "workspace-viewer", "deployment": "a-etl"}, 422),
        ("workspace-admin", {"role": "root"}, 422),
    ],
)
async def test_token_grants_stay_within_the_issuers_reach(
    client: httpx.AsyncClient,
    make_token: TokenFactory,
    issuer: str,
    body: dict[str, str],
    status: int,
) -> None:
    bound = {"deployment": "a-etl"} if issuer.startswith("deployment") else {}
    headers = await make_token(issuer, workspace="team-a", **bound)
    response = await client.post(TOKENS, json={"name": "t", **body}, headers=headers)
    assert response.status_code == status, response.text


@pytest.mark.usefixtures("workspace")
async def test_workspace_admin_cannot_revoke_another_workspaces_token(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    await make_token("workspace-viewer", workspace="team-b")
    other = (await client.get("/api/v1/workspaces/team-b/tokens", headers=admin)).json()
    token_id = other["items"][0]["id"]
    workspace_admin = await make_token("workspace-admin", workspace="team-a")

    response = await client.delete(f"{TOKENS}/{token_id}", headers=workspace_admin)

    assert response.status_code == 404
