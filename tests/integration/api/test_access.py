"""Authentication and isolation: who may see and change what."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.factories import add_recipient, create_deployment, create_workspace


@pytest.fixture
async def two_workspaces(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for workspace, deployment in (("team-a", "a-etl"), ("team-b", "b-etl")):
        await create_workspace(client, admin, workspace)
        await create_deployment(client, admin, workspace, deployment)
        await add_recipient(client, admin, f"/api/v1/deployments/{deployment}/alert-recipients")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer sxt_0123456789abcdef_wrong-secret"},
    ],
)
async def test_missing_or_wrong_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/workspaces", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_right_id_with_wrong_secret_is_401(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    token = admin["Authorization"].removeprefix("Bearer ")
    token_id = token.split("_")[1]
    forged = {"Authorization": f"Bearer sxt_{token_id}_{'A' * 43}"}
    assert (await client.get("/api/v1/workspaces", headers=forged)).status_code == 401


@pytest.mark.usefixtures("two_workspaces")
async def test_revoked_token_is_401(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    viewer = await make_token("workspace-viewer", workspace="team-a")
    assert (await client.get("/api/v1/workspaces/team-a", headers=viewer)).status_code == 200
    listed = (await client.get("/api/v1/workspaces/team-a/tokens", headers=admin)).json()
    token_id = next(t["id"] for t in listed["items"] if t["role"] == "workspace-viewer")

    revoked = await client.delete(f"/api/v1/workspaces/team-a/tokens/{token_id}", headers=admin)

    assert revoked.status_code == 204
    assert (await client.get("/api/v1/workspaces/team-a", headers=viewer)).status_code == 401


@pytest.mark.usefixtures("two_workspaces")
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workspaces/team-b",
        "/api/v1/workspaces/team-b/deployments",
        "/api/v1/workspaces/team-b/alert-recipients",
        "/api/v1/deployments/b-etl",
        "/api/v1/deployments/b-etl/alert-recipients",
    ],
)
@pytest.mark.parametrize("role", ["workspace-admin", "workspace-viewer"])
async def test_token_of_workspace_a_gets_404_for_workspace_b(
    client: httpx.AsyncClient, make_token: TokenFactory, path: str, role: str
) -> None:
    headers = await make_token(role, workspace="team-a")
    response = await client.get(path, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.usefixtures("two_workspaces")
async def test_invisible_and_missing_deployments_answer_alike(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = await make_token("workspace-admin", workspace="team-a")
    hidden = await client.get("/api/v1/deployments/b-etl", headers=headers)
    missing = await client.get("/api/v1/deployments/no-such", headers=headers)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["message"] == "deployment 'b-etl' not found"
    assert missing.json()["error"]["message"] == "deployment 'no-such' not found"


@pytest.mark.usefixtures("two_workspaces")
async def test_deployment_token_sees_only_its_deployment(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    await create_deployment(client, admin, "team-a", "a-other")
    headers = await make_token("deployment-viewer", deployment="a-etl")

    listed = (await client.get("/api/v1/deployments", headers=headers)).json()

    assert [d["name"] for d in listed["items"]] == ["a-etl"]
    assert (await client.get("/api/v1/deployments/a-other", headers=headers)).status_code == 404


@pytest.mark.usefixtures("two_workspaces")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/workspaces/team-a/deployments", {"name": "new-one"}),
        ("PATCH", "/api/v1/deployments/a-etl", {"description": "x"}),
        ("DELETE", "/api/v1/deployments/a-etl", None),
        ("POST", "/api/v1/deployments/a-etl/alert-recipients", {"email": "x@example.com"}),
        ("POST", "/api/v1/workspaces/team-a/alert-recipients", {"email": "x@example.com"}),
        ("PATCH", "/api/v1/workspaces/team-a", {"description": "x"}),
    ],
)
async def test_viewer_writing_is_403(
    client: httpx.AsyncClient,
    make_token: TokenFactory,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    viewer = await make_token("workspace-viewer", workspace="team-a")
    response = await client.request(method, path, json=body, headers=viewer)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
