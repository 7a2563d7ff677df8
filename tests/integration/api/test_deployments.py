"""Deployments through the API: registration, spec validation, updates, listing and deletion."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.factories import create_deployment, create_workspace


@pytest.fixture
async def workspace(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    return (await create_workspace(client, admin, "data-eng"))["name"]


async def test_new_deployment_gets_the_celery_component_set_and_is_pending(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    deployment = await create_deployment(client, admin, workspace, "etl-prod")

    assert deployment["executor"] == "CeleryExecutor"
    assert deployment["status"] == "pending"
    assert deployment["workspace"] == workspace
    assert set(deployment["components"]) == {
        "scheduler", "api_server", "dag_processor", "triggerer", "workers", "flower",
        "pgbouncer", "redis", "statsd",
    }  # fmt: skip
    assert deployment["generation"] == 1


async def test_local_executor_runs_no_workers_redis_or_flower(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    deployment = await create_deployment(
        client, admin, workspace, "small", executor="LocalExecutor"
    )
    assert not {"workers", "redis", "flower"} & set(deployment["components"])


async def test_workers_for_local_executor_are_refused_naming_the_field(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments",
        json={"name": "small", "executor": "LocalExecutor", "components": {"workers": {}}},
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "components.workers"


@pytest.mark.parametrize(
    ("components", "field"),
    [
        ({"scheduler": {"memory": "64Mi"}}, "components.scheduler.memory"),
        ({"scheduler": {"replicas": 9}}, "components.scheduler.replicas"),
        ({"workers": {"replicas": 50}}, "components.workers.replicas"),
        ({"redis": {"cpu": "0m"}}, "components.redis.cpu"),
        ({"api_server": {"memory": "lots"}}, "components.api_server.memory"),
    ],
)
async def test_impossible_component_spec_is_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    workspace: str,
    components: dict[str, object],
    field: str,
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments",
        json={"name": "bad-spec", "components": components, "max_workers": 10},
        headers=admin,
    )
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_min_workers_above_max_workers_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments",
        json={"name": "bounds", "min_workers": 5, "max_workers": 2},
        headers=admin,
    )
    assert response.status_code == 422
    assert "min_workers" in [d["field"] for d in response.json()["error"]["details"]]


async def test_update_merges_the_spec_and_bumps_the_generation(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod")

    response = await client.patch(
        "/api/v1/deployments/etl-prod",
        json={"components": {"scheduler": {"replicas": 2}}, "max_workers": 20},
        headers=admin,
    )

    body = response.json()
    assert response.status_code == 200
    assert body["components"]["scheduler"] == {"replicas": 2, "cpu": "1000m", "memory": "2Gi"}
    assert body["max_workers"] == 20
    assert body["generation"] == 2


async def test_switching_to_local_executor_drops_celery_components(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod")
    response = await client.patch(
        "/api/v1/deployments/etl-prod", json={"executor": "LocalExecutor"}, headers=admin
    )
    assert response.status_code == 200
    assert "workers" not in response.json()["components"]


async def test_an_unchanged_update_keeps_the_generation(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod", description="same")
    response = await client.patch(
        "/api/v1/deployments/etl-prod", json={"description": "same"}, headers=admin
    )
    assert response.json()["generation"] == 1


async def test_invalid_update_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod")
    response = await client.patch(
        "/api/v1/deployments/etl-prod",
        json={"description": "changed", "min_workers": 50},
        headers=admin,
    )
    assert response.status_code == 422
    current = (await client.get("/api/v1/deployments/etl-prod", headers=admin)).json()
    assert current["description"] == ""
    assert current["min_workers"] == 1


async def test_status_is_read_only(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod")
    response = await client.patch(
        "/api/v1/deployments/etl-prod", json={"status": "healthy"}, headers=admin
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "status"


async def test_list_filters_by_workspace_and_paginates(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_workspace(client, admin, "other")
    for name in ("a-one", "a-two", "a-three"):
        await create_deployment(client, admin, workspace, name)
    await create_deployment(client, admin, "other", "b-one")

    first = (
        await client.get(
            "/api/v1/deployments", params={"workspace": workspace, "limit": 2}, headers=admin
        )
    ).json()
    second = (
        await client.get(
            "/api/v1/deployments",
            params={"workspace": workspace, "limit": 2, "offset": 2},
            headers=admin,
        )
    ).json()
    everything = (await client.get("/api/v1/deployments", headers=admin)).json()

    assert [d["name"] for d in first["items"]] == ["a-one", "a-three"]
    assert [d["name"] for d in second["items"]] == ["a-two"]
    assert first["total"] == 3
    assert everything["total"] == 4


async def test_deleting_a_deployment_removes_it_and_its_recipients(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod")
    await client.post(
        "/api/v1/deployments/etl-prod/alert-recipients",
        json={"email": "ops@example.com"},
        headers=admin,
    )

    assert (await client.delete("/api/v1/deployments/etl-prod", headers=admin)).status_code == 204
    assert (await client.get("/api/v1/deployments/etl-prod", headers=admin)).status_code == 404
    # Re-registering the same name starts clean: no recipients carried over.
    await create_deployment(client, admin, workspace, "etl-prod")
    listed = await client.get("/api/v1/deployments/etl-prod/alert-recipients", headers=admin)
    assert listed.json()["total"] == 0


async def test_deployment_names_are_unique_across_workspaces(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    await create_workspace(client, admin, "other")
    await create_deployment(client, admin, workspace, "etl-prod")
    response = await client.post(
        "/api/v1/workspaces/other/deployments", json={"name": "etl-prod"}, headers=admin
    )
    assert response.status_code == 409


async def test_deployment_editor_updates_but_cannot_delete(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory, workspace: str
) -> None:
    await create_deployment(client, admin, workspace, "etl-prod")
    editor = await make_token("deployment-editor", workspace=workspace, deployment="etl-prod")

    update = await client.patch(
        "/api/v1/deployments/etl-prod", json={"description": "x"}, headers=editor
    )
    delete = await client.delete("/api/v1/deployments/etl-prod", headers=editor)

    assert update.status_code == 200
    assert delete.status_code == 403
