"""Workspaces through the API: lifecycle, visibility and the delete guard."""

from __future__ import annotations

import httpx

from tests.conftest import TokenFactory
from tests.factories import create_deployment, create_workspace


async def test_admin_creates_lists_renames_and_deletes_a_workspace(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await create_workspace(client, admin, "data-eng", description="Data engineering")
    assert created["name"] == "data-eng"

    listed = (await client.get("/api/v1/workspaces", headers=admin)).json()
    assert [w["name"] for w in listed["items"]] == ["data-eng"]
    assert listed["total"] == 1

    renamed = await client.patch(
        "/api/v1/workspaces/data-eng", json={"name": "analytics"}, headers=admin
    )
    assert renamed.status_code == 200
    assert (await client.get("/api/v1/workspaces/data-eng", headers=admin)).status_code == 404
    assert (await client.get("/api/v1/workspaces/analytics", headers=admin)).status_code == 200

    assert (await client.delete("/api/v1/workspaces/analytics", headers=admin)).status_code == 204
    assert (await client.get("/api/v1/workspaces/analytics", headers=admin)).status_code == 404


async def test_workspace_with_deployments_cannot_be_deleted(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "busy")
    await create_deployment(client, admin, "busy", "etl-prod")

    response = await client.delete("/api/v1/workspaces/busy", headers=admin)

    assert response.status_code == 409
    assert "still has 1 deployment" in response.json()["error"]["message"]


async def test_duplicate_workspace_is_a_conflict(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "twice")
    response = await client.post("/api/v1/workspaces", json={"name": "twice"}, headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_renaming_onto_a_taken_name_is_a_conflict(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "first")
    await create_workspace(client, admin, "second")
    response = await client.patch(
        "/api/v1/workspaces/second", json={"name": "first"}, headers=admin
    )
    assert response.status_code == 409


async def test_workspace_token_sees_only_its_workspace(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    await create_workspace(client, admin, "team-a")
    await create_workspace(client, admin, "team-b")
    viewer = await make_token("workspace-viewer", workspace="team-a")

    listed = (await client.get("/api/v1/workspaces", headers=viewer)).json()
    assert [w["name"] for w in listed["items"]] == ["team-a"]
    assert (await client.get("/api/v1/workspaces/team-b", headers=viewer)).status_code == 404


async def test_only_system_admins_create_or_delete_workspaces(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    await create_workspace(client, admin, "team-a")
    workspace_admin = await make_token("workspace-admin", workspace="team-a")

    create = await client.post("/api/v1/workspaces", json={"name": "x"}, headers=workspace_admin)
    delete = await client.delete("/api/v1/workspaces/team-a", headers=workspace_admin)
    rename = await client.patch(
        "/api/v1/workspaces/team-a", json={"description": "ours"}, headers=workspace_admin
    )

    assert create.status_code == 403
    assert delete.status_code == 403
    assert rename.status_code == 200
