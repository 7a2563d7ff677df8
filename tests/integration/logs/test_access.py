"""Who may read a deployment's logs: viewers and above; anyone else gets 404, and Elasticsearch
is not asked anything for them (counted by Elasticsearch itself, `_nodes/stats` search totals)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.core.security import Role
from tests.integration.logs.conftest import (
    RUN_ID,
    LogIndex,
    airflow3_task_lines,
    component_lines,
    issue_token,
    register,
    unique,
)


@pytest.fixture
async def two_workspaces(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], log_index: LogIndex
) -> dict[str, str]:
    """Deployments `mine` (workspace data-team, with logs) and `theirs` (workspace other)."""
    mine, other = unique("mine"), unique("other")
    for name in (mine, other):
        log_index.prepare(name)
        log_index.write(
            name,
            airflow3_task_lines(name, 3) + component_lines(name, [("scheduler", "info", "hi")]),
        )
    await register(client, admin, mine)
    await register(client, admin, other, workspace="other-team")
    return {"mine": mine, "theirs": other}


def paths(deployment: str) -> list[str]:
    base = f"/api/v1/deployments/{deployment}/logs"
    return [
        f"{base}/tasks/sextant_parallel/{RUN_ID}/sleep",
        base,
        f"{base}/follow?max_seconds=1",
        f"{base}/follow?max_seconds=1&dag_id=sextant_parallel&task_id=sleep&run_id={RUN_ID}",
    ]


async def test_another_workspaces_token_gets_404_and_no_search_reaches_elasticsearch(
    app: Any, client: httpx.AsyncClient, log_index: LogIndex, two_workspaces: dict[str, str]
) -> None:
    outsiders = [
        await issue_token(app, Role.WORKSPACE_VIEWER, "other-team"),
        await issue_token(app, Role.WORKSPACE_ADMIN, "other-team"),
        await issue_token(app, Role.DEPLOYMENT_ADMIN, "other-team", two_workspaces["theirs"]),
    ]
    before = log_index.searches()
    for outsider in outsiders:
        for path in paths(two_workspaces["mine"]):
            response = await client.get(path, headers=outsider)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "not_found"
    assert log_index.searches() == before


async def test_a_viewer_of_another_deployment_in_the_same_workspace_gets_404(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], log_index: LogIndex,
    two_workspaces: dict[str, str],
) -> None:  # fmt: skip
    sibling = unique("sibling")
    await register(client, admin, sibling)
    viewer = await issue_token(app, Role.DEPLOYMENT_VIEWER, "data-team", sibling)
    before = log_index.searches()
    for path in paths(two_workspaces["mine"])[:2]:
        assert (await client.get(path, headers=viewer)).status_code == 404
    assert log_index.searches() == before


@pytest.mark.parametrize("role", [Role.DEPLOYMENT_VIEWER, Role.WORKSPACE_VIEWER])
async def test_viewers_read_and_their_reads_do_reach_elasticsearch(
    app: Any,
    client: httpx.AsyncClient,
    log_index: LogIndex,
    two_workspaces: dict[str, str],
    role: Role,
) -> None:
    mine = two_workspaces["mine"]
    bound = mine if role is Role.DEPLOYMENT_VIEWER else None
    viewer = await issue_token(app, role, "data-team", bound)
    before = log_index.searches()
    task, components = paths(mine)[:2]
    task_page = await client.get(task, headers=viewer)
    assert task_page.status_code == 200
    assert len(task_page.json()["lines"]) == 3
    component_page = await client.get(components, headers=viewer)
    assert [line["message"] for line in component_page.json()["lines"]] == ["hi"]
    # The control: the counter does move for a read that is allowed.
    assert log_index.searches() >= before + 2


async def test_without_a_token_it_is_401(
    client: httpx.AsyncClient, two_workspaces: dict[str, str]
) -> None:
    for path in paths(two_workspaces["mine"]):
        assert (await client.get(path)).status_code == 401
