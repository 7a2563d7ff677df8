"""Bad input is a 422 that names the field, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import create_workspace


@pytest.fixture
async def workspace(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    return (await create_workspace(client, admin, "data-eng"))["name"]


@pytest.mark.parametrize(
    "name",
    ["ETL-Prod", "a" * 41, "1etl", "", "etl_prod", "etl-", "-etl", "etl.prod", " etl", None, 42],
    ids=["uppercase", "too-long", "leading-digit", "empty", "underscore", "trailing-dash",
         "leading-dash", "dot", "space", "null", "number"],
)  # fmt: skip
async def test_invalid_deployment_name_is_422_naming_name(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str, name: object
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments", json={"name": name}, headers=admin
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert [d["field"] for d in error["details"]] == ["name"]


async def test_forty_character_name_is_accepted(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments", json={"name": "a" * 40}, headers=admin
    )
    assert response.status_code == 201


async def test_unknown_field_is_422_naming_it(
    client: httpx.AsyncClient, admin: dict[str, str], workspace: str
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments",
        json={"name": "etl", "replicas": 3},
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "replicas", "message": "unknown field", "type": "extra_forbidden"}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "etl", "executor": "KubernetesExecutor"}, "executor"),
        ({"name": "etl", "airflow_version": "2.10.4"}, "airflow_version"),
        ({"name": "etl", "max_workers": "many"}, "max_workers"),
        ({"name": "etl", "worker_concurrency": 0}, "worker_concurrency"),
        ({"name": "etl", "components": {"gpu": {}}}, "components.gpu"),
        ({"name": "etl", "components": {"workers": {"cpu": "fast"}}}, "components.workers.cpu"),
    ],
)
async def test_wrong_types_and_values_are_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    workspace: str,
    body: dict[str, object],
    field: str,
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments", json=body, headers=admin
    )
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "ten"}])
async def test_bad_pagination_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], params: dict[str, object]
) -> None:
    response = await client.get("/api/v1/deployments", params=params, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"].startswith("query.")


async def test_unknown_workspace_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        "/api/v1/workspaces/nope/deployments", json={"name": "etl"}, headers=admin
    )
    assert response.status_code == 404
