"""Reading task logs through the API from the real Elasticsearch: order, pages, the end mark,
both Airflow shapes, and run ids with ':' and '+' in the path."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.integration.logs.conftest import (
    RUN_ID,
    LogIndex,
    airflow2_task_lines,
    airflow3_task_lines,
    register,
    unique,
)

LINES = 10_000


@pytest.fixture(scope="module")
def long_log(elasticsearch_server: Any) -> str:
    """A deployment's stream holding a 10,000-line try (and its neighbours), indexed once."""
    index = LogIndex(elasticsearch_server.url)
    deployment = unique("long")
    index.prepare(deployment)
    documents = airflow3_task_lines(deployment, LINES)
    # The same task's other try and a mapped instance, and another task: none may leak in.
    documents += airflow3_task_lines(deployment, 7, try_number=2)
    documents += airflow3_task_lines(deployment, 5, map_index=0)
    documents += airflow3_task_lines(deployment, 5, task_id="sleep_2")
    index.write(deployment, documents)
    return deployment


def task_path(deployment: str, run_id: str = RUN_ID, task_id: str = "sleep") -> str:
    return f"/api/v1/deployments/{deployment}/logs/tasks/sextant_parallel/{run_id}/{task_id}"


async def read_all(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every line of a try, page after page until end_of_log; and how many pages it took."""
    lines: list[dict[str, Any]] = []
    after: str | None = None
    for pages in range(1, 100):
        query = dict(params, **({"after": after} if after is not None else {}))
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        lines += page["lines"]
        after = page["next_after"]
        if page["end_of_log"]:
            return lines, pages
    raise AssertionError("no end_of_log after 100 pages")


async def test_a_10000_line_log_reads_back_in_order_across_pages_with_no_line_lost_or_repeated(
    client: httpx.AsyncClient, admin: dict[str, str], long_log: str
) -> None:
    await register(client, admin, long_log)
    lines, pages = await read_all(client, admin, task_path(long_log), limit=1500)
    assert pages == 7
    assert [line["offset"] for line in lines] == [str(n) for n in range(1, LINES + 1)]
    assert [line["message"] for line in lines[:2]] == ["line 1", "line 2"]
    assert all(line["message"] != "end_of_log" for line in lines)
    assert lines[6]["level"] == "warning"
    assert lines[0]["host"] == "worker-0"
    assert lines[0]["timestamp"].endswith("Z")


async def test_the_page_after_the_last_line_holds_only_the_end_mark(
    client: httpx.AsyncClient, admin: dict[str, str], long_log: str
) -> None:
    await register(client, admin, long_log)
    full = await client.get(task_path(long_log), params={"limit": LINES}, headers=admin)
    assert full.status_code == 200
    assert len(full.json()["lines"]) == LINES
    assert full.json()["end_of_log"] is False
    rest = await client.get(
        task_path(long_log), params={"after": full.json()["next_after"]}, headers=admin
    )
    assert rest.json()["lines"] == []
    assert rest.json()["end_of_log"] is True
    # Past the end, the cursor stays where it is: a client polling it gets nothing new.
    past = await client.get(
        task_path(long_log), params={"after": rest.json()["next_after"]}, headers=admin
    )
    assert past.json() == {**rest.json(), "end_of_log": False}


async def test_other_tries_mapped_instances_and_tasks_stay_apart(
    client: httpx.AsyncClient, admin: dict[str, str], long_log: str
) -> None:
    await register(client, admin, long_log)
    second, _ = await read_all(client, admin, task_path(long_log), try_number=2)
    mapped, _ = await read_all(client, admin, task_path(long_log), map_index=0)
    other, _ = await read_all(client, admin, task_path(long_log, task_id="sleep_2"))
    assert [len(second), len(mapped), len(other)] == [7, 5, 5]
    third = await client.get(task_path(long_log), params={"try_number": 3}, headers=admin)
    assert third.json()["lines"] == []
    assert third.json()["end_of_log"] is False
    assert third.json()["next_after"] is None
    assert third.json()["log_id"] == f"sextant_parallel-sleep-{RUN_ID}--1-3"


async def test_run_ids_with_colons_and_plus_signs_route_raw_or_percent_encoded(
    client: httpx.AsyncClient, admin: dict[str, str], long_log: str
) -> None:
    await register(client, admin, long_log)
    for run_id in (RUN_ID, quote(RUN_ID, safe=""), RUN_ID.replace("+", "%2B")):
        response = await client.get(
            task_path(long_log, run_id=run_id), params={"limit": 3}, headers=admin
        )
        assert response.status_code == 200, (run_id, response.text)
        assert [line["offset"] for line in response.json()["lines"]] == ["1", "2", "3"]


async def test_airflow_2_documents_read_with_their_nanosecond_offsets_exact(
    client: httpx.AsyncClient, admin: dict[str, str], log_index: LogIndex
) -> None:
    deployment = unique("af2")
    log_index.prepare(deployment)
    documents = airflow2_task_lines(deployment, 30)
    log_index.write(deployment, documents)
    await register(client, admin, deployment)
    path = (
        f"/api/v1/deployments/{deployment}/logs/tasks/legacy/"
        "scheduled__2026-11-23T00:00:00+00:00/extract"
    )
    lines, _ = await read_all(client, admin, path, limit=10)
    assert [line["message"] for line in lines] == [f"legacy {n}" for n in range(30)]
    # Above 2**53: only exact as strings.
    assert [line["offset"] for line in lines] == [str(d["offset"]) for d in documents[:30]]
    assert {line["level"] for line in lines} == {"INFO"}
    assert lines[0]["host"] == "worker-1"


async def test_a_deployment_that_never_logged_has_an_empty_log(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    deployment = unique("quiet")
    await register(client, admin, deployment)
    response = await client.get(task_path(deployment), headers=admin)
    assert response.status_code == 200
    assert response.json()["lines"] == []
    assert response.json()["end_of_log"] is False


BAD_INPUT = [
    ({"after": "-1"}, "query.after"),
    ({"after": "12a"}, "query.after"),
    ({"after": "9223372036854775808"}, "query.after"),
    ({"limit": "10001"}, "query.limit"),
    ({"try_number": "0"}, "query.try_number"),
    ({"map_index": "-2"}, "query.map_index"),
]


async def test_bad_cursors_and_limits_are_invalid_input_naming_the_parameter(
    client: httpx.AsyncClient, admin: dict[str, str], long_log: str
) -> None:
    await register(client, admin, long_log)
    for params, field in BAD_INPUT:
        response = await client.get(task_path(long_log), params=params, headers=admin)
        assert response.status_code == 422, params
        assert response.json()["error"]["details"][0]["field"] == field
