"""Alert recipients of deployments and workspaces through the API."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.factories import add_recipient, create_deployment, create_workspace

DEPLOYMENT_RECIPIENTS = "/api/v1/deployments/etl-prod/alert-recipients"
WORKSPACE_RECIPIENTS = "/api/v1/workspaces/data-eng/alert-recipients"


@pytest.fixture
async def deployment(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await create_workspace(client, admin, "data-eng")
    return (await create_deployment(client, admin, "data-eng", "etl-prod"))["name"]


@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize("path", [DEPLOYMENT_RECIPIENTS, WORKSPACE_RECIPIENTS])
async def test_recipient_lifecycle(
    client: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    added = await add_recipient(
        client, admin, path, "Oncall@Example.COM", min_severity="critical", display_name="On call"
    )
    assert added["email"] == "oncall@example.com"
    assert added["min_severity"] == "critical"
    assert added["scope"] == ("workspace" if "workspaces" in path else "deployment")

    item = f"{path}/{added['id']}"
    updated = await client.patch(item, json={"min_severity": "info"}, headers=admin)
    assert updated.json()["min_severity"] == "info"
    assert (await client.get(path, headers=admin)).json()["total"] == 1

    assert (await client.delete(item, headers=admin)).status_code == 204
    assert (await client.get(item, headers=admin)).status_code == 404
    assert (await client.get(path, headers=admin)).json()["total"] == 0


@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize("path", [DEPLOYMENT_RECIPIENTS, WORKSPACE_RECIPIENTS])
async def test_same_address_twice_is_a_conflict_whatever_its_case(
    client: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    await add_recipient(client, admin, path, "ops@example.com")
    response = await client.post(path, json={"email": "OPS@example.com"}, headers=admin)
    assert response.status_code == 409


@pytest.mark.usefixtures("deployment")
async def test_same_address_on_deployment_and_workspace_is_allowed(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await add_recipient(client, admin, DEPLOYMENT_RECIPIENTS, "ops@example.com")
    await add_recipient(client, admin, WORKSPACE_RECIPIENTS, "ops@example.com")


@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize(
    "email", ["not-an-address", "a@b", "@example.com", "two@@example.com", "", "x" * 330]
)
async def test_invalid_email_is_422_naming_the_field(
    client: httpx.AsyncClient, admin: dict[str, str], email: str
) -> None:
    response = await client.post(DEPLOYMENT_RECIPIENTS, json={"email": email}, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "email"


@pytest.mark.usefixtures("deployment")
async def test_unknown_severity_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        DEPLOYMENT_RECIPIENTS,
        json={"email": "ops@example.com", "min_severity": "page-me"},
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "min_severity"


@pytest.mark.usefixtures("deployment")
async def test_a_recipient_is_not_reachable_through_another_owner(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_deployment(client, admin, "data-eng", "other")
    added = await add_recipient(client, admin, DEPLOYMENT_RECIPIENTS)
    response = await client.get(
        f"/api/v1/deployments/other/alert-recipients/{added['id']}", headers=admin
    )
    assert response.status_code == 404


@pytest.mark.usefixtures("deployment")
async def test_viewer_reads_but_cannot_change_recipients(
    client: httpx.AsyncClient, admin: dict[str, str], make_token: TokenFactory
) -> None:
    viewer = await make_token("deployment-viewer", deployment="etl-prod")
    assert (await client.get(DEPLOYMENT_RECIPIENTS, headers=viewer)).status_code == 200
    response = await client.post(
        DEPLOYMENT_RECIPIENTS, json={"email": "ops@example.com"}, headers=viewer
    )
    assert response.status_code == 403


@pytest.mark.usefixtures("deployment")
async def test_deployment_token_cannot_manage_workspace_recipients(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    editor = await make_token("deployment-editor", deployment="etl-prod")
    response = await client.post(
        WORKSPACE_RECIPIENTS, json={"email": "ops@example.com"}, headers=editor
    )
    assert response.status_code == 403
