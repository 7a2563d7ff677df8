"""Searching component logs through the API from the real Elasticsearch: newest first,
stateless cursors, level and text filters, time windows, and no task lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.logs.conftest import (
    LogIndex,
    airflow2_task_lines,
    airflow3_task_lines,
    component_lines,
    register,
    unique,
)

NEWEST = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
SCRIPT = [
    ("scheduler", "info", "Starting the scheduler"),
    ("dag_processor", "info", "Processing files"),
    ("scheduler", "warning", "Heartbeat took 12 s, longer than expected"),
    ("api_server", "info", "GET /api/v2/monitor/health 200"),
    ("workers", "error", "Task exited with return code Negsignal.SIGKILL"),
    ("triggerer", "info", "1 triggers currently running"),
    ("scheduler", "error", "Scheduler heartbeat failed: database is locked"),
    ("scheduler", "critical", "Scheduler crashed"),
    ("scheduler", "debug", "Loop took 0.01 s"),
    ("scheduler", "info", "Heartbeat OK"),
]


@pytest.fixture(scope="module")
def fleet_logs(elasticsearch_server: Any) -> str:
    """A deployment's stream with component lines a second apart, and task lines mixed in."""
    index = LogIndex(elasticsearch_server.url)
    deployment = unique("comp")
    index.prepare(deployment)
    documents = component_lines(deployment, SCRIPT, newest=NEWEST)
    # Airflow 2 components write `levelname` and `message`.
    documents.append(
        {
            "levelname": "ERROR",
            "message": "Scheduler heartbeat failed (Airflow 2 shape)",
            "offset": 1,
            "@timestamp": (NEWEST - timedelta(minutes=1)).isoformat(),
            "component": "scheduler",
            "host": "scheduler-1",
        }
    )
    documents += airflow3_task_lines(deployment, 20, start=NEWEST - timedelta(seconds=3))
    documents += airflow2_task_lines(deployment, 5, start=NEWEST - timedelta(seconds=2))
    index.write(deployment, documents)
    return deployment


async def search(
    client: httpx.AsyncClient, admin: dict[str, str], deployment: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/deployments/{deployment}/logs", params=params, headers=admin
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def messages(page: dict[str, Any]) -> list[str]:
    return [line["message"] for line in page["lines"]]


async def test_component_lines_come_newest_first_without_task_lines(
    client: httpx.AsyncClient, admin: dict[str, str], fleet_logs: str
) -> None:
    await register(client, admin, fleet_logs)
    page = await search(client, admin, fleet_logs)
    assert messages(page)[:10] == [text for _, _, text in reversed(SCRIPT)]
    assert len(page["lines"]) == 11  # and the Airflow 2 line, a minute older
    assert page["next_cursor"] is None
    newest = page["lines"][0]
    assert newest["timestamp"] == NEWEST.isoformat().replace("+00:00", "Z")
    assert (newest["component"], newest["host"], newest["level"]) == (
        "scheduler",
        "scheduler-0",
        "info",
    )
    assert newest["logger"] == "airflow.scheduler"


async def test_pages_follow_each_other_through_the_cursor_without_gap_or_repeat(
    client: httpx.AsyncClient, admin: dict[str, str], fleet_logs: str
) -> None:
    await register(client, admin, fleet_logs)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await search(client, admin, fleet_logs, **params)
        seen += messages(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == messages(await search(client, admin, fleet_logs, limit=100))


SEARCHES: list[tuple[dict[str, str], list[str]]] = [
    (
        {"level": "error"},
        [
            "Scheduler crashed",
            "Scheduler heartbeat failed: database is locked",
            "Task exited with return code Negsignal.SIGKILL",
            "Scheduler heartbeat failed (Airflow 2 shape)",
        ],
    ),
    (
        {"level": "warning", "component": "scheduler", "q": "heartbeat"},
        [
            "Scheduler heartbeat failed: database is locked",
            "Heartbeat took 12 s, longer than expected",
            "Scheduler heartbeat failed (Airflow 2 shape)",
        ],
    ),
    ({"q": "database is locked"}, ["Scheduler heartbeat failed: database is locked"]),
    ({"q": "locked database"}, []),
    ({"component": "triggerer"}, ["1 triggers currently running"]),
    ({"component": "workers", "level": "critical"}, []),
]


async def test_search_by_level_component_and_text(
    client: httpx.AsyncClient, admin: dict[str, str], fleet_logs: str
) -> None:
    await register(client, admin, fleet_logs)
    for params, expected in SEARCHES:
        assert messages(await search(client, admin, fleet_logs, **params)) == expected, params


async def test_a_time_window_includes_since_and_excludes_until(
    client: httpx.AsyncClient, admin: dict[str, str], fleet_logs: str
) -> None:
    await register(client, admin, fleet_logs)
    since = NEWEST - timedelta(seconds=2)
    page = await search(
        client, admin, fleet_logs, since=since.isoformat(), until=NEWEST.isoformat()
    )
    assert messages(page) == ["Loop took 0.01 s", "Scheduler crashed"]


BAD_FILTERS: list[tuple[dict[str, str], str]] = [
    ({"cursor": "not-a-cursor"}, "query.cursor"),
    ({"level": "verbose"}, "query.level"),
    ({"component": "redis"}, "query.component"),
    ({"since": "2026-11-24T10:00:00Z", "until": "2026-11-24T09:00:00Z"}, "query.until"),
    ({"limit": "1001"}, "query.limit"),
    ({"q": ""}, "query.q"),
]


async def test_bad_filters_are_invalid_input_naming_the_parameter(
    client: httpx.AsyncClient, admin: dict[str, str], fleet_logs: str
) -> None:
    await register(client, admin, fleet_logs)
    for params, field in BAD_FILTERS:
        response = await client.get(
            f"/api/v1/deployments/{fleet_logs}/logs", params=params, headers=admin
        )
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["details"][0]["field"] == field
