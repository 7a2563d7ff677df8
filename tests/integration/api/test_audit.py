"""The audit trail: every change recorded with who, what, when, before and after."""

from __future__ import annotations

import httpx

from tests.conftest import TokenFactory
from tests.factories import add_recipient, create_deployment, create_workspace


async def test_changes_are_recorded_with_before_and_after(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "team-a")
    await create_deployment(client, admin, "team-a", "a-etl")
    await client.patch("/api/v1/deployments/a-etl", json={"max_workers": 4}, headers=admin)
    await add_recipient(client, admin, "/api/v1/deployments/a-etl/alert-recipients")

    events = (await client.get("/api/v1/audit-events", headers=admin)).json()["items"]

    actions = [e["action"] for e in events]
    assert actions[:4] == [
        "recipient.create", "deployment.update", "deployment.create", "workspace.create",
    ]  # fmt: skip
    update = events[1]
    assert update["before"]["max_workers"] == 10
    assert update["after"]["max_workers"] == 4
    assert update["actor_name"].startswith("test-")
    assert update["request_id"]


async def test_a_failed_change_leaves_no_record(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "team-a")
    await client.post("/api/v1/workspaces", json={"name": "team-a"}, headers=admin)
    events = (await client.get("/api/v1/audit-events", headers=admin)).json()["items"]
    assert [e["action"] for e in events if e["action"] == "workspace.create"] == [
        "workspace.create"
    ]


async def test_workspace_admin_reads_only_its_workspace_and_viewers_none(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    await create_workspace(client, admin, "team-a")
    await create_workspace(client, admin, "team-b")
    workspace_admin = await make_token("workspace-admin", workspace="team-a")
    viewer = await make_token("workspace-viewer", workspace="team-a")

    events = (await client.get("/api/v1/audit-events", headers=workspace_admin)).json()

    assert {e["resource_id"] for e in events["items"] if e["resource_type"] == "workspace"} == {
        "team-a"
    }
    assert (await client.get("/api/v1/audit-events", headers=viewer)).status_code == 403
    other = await client.get(
        "/api/v1/audit-events", params={"workspace": "team-b"}, headers=workspace_admin
    )
    assert other.status_code == 404
