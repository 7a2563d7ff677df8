"""The scaling policy and decisions API on both databases: defaults, validation, roles."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.core.security import Role
from tests.conftest import TokenFactory
from tests.factories import create_deployment, create_workspace

POLICY = "/api/v1/deployments/etl/scaling-policy"


@pytest.fixture
async def deployment(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    await create_workspace(client, admin, "data-eng")
    return await create_deployment(
        client, admin, "data-eng", "etl", min_workers=1, max_workers=8, worker_concurrency=6
    )


async def test_a_deployment_without_policy_reads_disabled_defaults_from_its_spec(
    client: httpx.AsyncClient, admin: dict[str, str], deployment: dict[str, Any]
) -> None:
    response = await client.get(POLICY, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enabled"] is False
    assert body["effective"] == {"min_workers": 1, "max_workers": 8, "tasks_per_worker": 6}
    assert body["scale_down_window_seconds"] == 300
    assert body["scale_down_window_max_seconds"] == 1200
    assert body["current_workers"] == 1


async def test_put_replaces_the_policy_and_get_returns_it(
    client: httpx.AsyncClient, admin: dict[str, str], deployment: dict[str, Any]
) -> None:
    wanted = {
        "enabled": True, "min_workers": 2, "max_workers": 5, "tasks_per_worker": 4,
        "scale_up_limit": 50, "scale_up_limit_kind": "percent",
        "scale_down_window_seconds": 120, "scale_down_window_max_seconds": 600,
        "queue": "default",
    }  # fmt: skip
    put = await client.put(POLICY, json=wanted, headers=admin)
    assert put.status_code == 200, put.text
    got = (await client.get(POLICY, headers=admin)).json()
    assert {k: got[k] for k in wanted} == wanted
    assert got["effective"] == {"min_workers": 2, "max_workers": 5, "tasks_per_worker": 4}
    # PUT replaces: what is omitted goes back to its default.
    await client.put(POLICY, json={"enabled": True}, headers=admin)
    got = (await client.get(POLICY, headers=admin)).json()
    assert (got["min_workers"], got["queue"], got["scale_up_limit_kind"]) == (None, None, "pods")
    audit = await client.get(
        "/api/v1/audit-events", params={"action": "scaling-policy.update"}, headers=admin
    )
    assert audit.json()["total"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_workers": 5, "max_workers": 3}, "min_workers"),
        ({"min_workers": 0}, "min_workers"),  # below the deployment's min_workers (1)
        ({"max_workers": 9}, "max_workers"),  # above the deployment's max_workers (8)
        ({"max_workers": 0}, "max_workers"),
        ({"tasks_per_worker": 0}, "tasks_per_worker"),
        ({"scale_up_limit_kind": "nodes"}, "scale_up_limit_kind"),
        ({"scale_down_window_seconds": -1}, "scale_down_window_seconds"),
        ({"scale_down_window_seconds": 3601}, "scale_down_window_seconds"),
        ({"scale_down_window_max_seconds": -5}, "scale_down_window_max_seconds"),
        ({"scale_down_window_max_seconds": "long"}, "scale_down_window_max_seconds"),
        ({"queue": "a b"}, "queue"),
        ({"enabled": "maybe"}, "enabled"),
        ({"replicas": 3}, "replicas"),
    ],
)
async def test_bad_policy_is_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    deployment: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    response = await client.put(POLICY, json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_roles_viewers_read_editors_write_others_do_not_see(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    make_token: TokenFactory,
    deployment: dict[str, Any],
) -> None:
    viewer = await make_token(Role.DEPLOYMENT_VIEWER, deployment="etl")
    editor = await make_token(Role.DEPLOYMENT_EDITOR, deployment="etl")
    await create_workspace(client, admin, "other")
    stranger = await make_token(Role.WORKSPACE_ADMIN, workspace="other")
    assert (await client.get(POLICY, headers=viewer)).status_code == 200
    assert (await client.put(POLICY, json={}, headers=viewer)).status_code == 403
    assert (await client.put(POLICY, json={"enabled": True}, headers=editor)).status_code == 200
    assert (await client.get(POLICY, headers=stranger)).status_code == 404
    decisions = "/api/v1/deployments/etl/scaling-decisions"
    assert (await client.get(decisions, headers=viewer)).status_code == 200
    assert (await client.get(decisions, headers=stranger)).status_code == 404
    assert (await client.get(POLICY)).status_code == 401


async def test_a_local_executor_deployment_cannot_enable_scaling(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "solo")
    await create_deployment(client, admin, "solo", "tiny", executor="LocalExecutor")
    response = await client.put(
        "/api/v1/deployments/tiny/scaling-policy", json={"enabled": True}, headers=admin
    )
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["enabled"]


async def test_decisions_of_a_fresh_deployment_are_an_empty_page(
    client: httpx.AsyncClient, admin: dict[str, str], deployment: dict[str, Any]
) -> None:
    response = await client.get(
        "/api/v1/deployments/etl/scaling-decisions", params={"limit": 5}, headers=admin
    )
    assert response.json() == {"items": [], "total": 0, "limit": 5, "offset": 0}


async def test_simulate_without_prometheus_is_503(
    client: httpx.AsyncClient, admin: dict[str, str], deployment: dict[str, Any]
) -> None:
    response = await client.post(f"{POLICY}/simulate", json={"hours": 1}, headers=admin)
    assert response.status_code == 503
