"""The live tail as server-sent events, through a real uvicorn on 127.0.0.1 (httpx's ASGI
transport would buffer the stream until it ends): lines appended while a client follows
arrive, a task's tail ends at its end mark, every tail ends at its time limit, and a tail the
client leaves is released at once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core.security import Role
from app.logs.service import FOLLOWS_ACTIVE
from tests.integration.logs.conftest import (
    RUN_ID,
    LogIndex,
    ServerSentEvent,
    airflow3_task_lines,
    asgi_client,
    component_lines,
    issue_token,
    register,
    server_sent_events,
    serving,
    unique,
)


async def prepared(app: Any, log_index: LogIndex, stem: str) -> tuple[str, dict[str, str]]:
    """A registered deployment with its template, and an administrator's headers."""
    deployment = unique(stem)
    log_index.prepare(deployment)
    admin = await issue_token(app, Role.SYSTEM_ADMIN)
    async with asgi_client(app) as client:
        await register(client, admin, deployment)
    return deployment, admin


async def next_event(events: Any, timeout: float = 10) -> ServerSentEvent:
    event: ServerSentEvent = await asyncio.wait_for(anext(events), timeout)
    return event


async def test_a_task_log_followed_while_lines_are_appended_arrives_in_order_and_ends(
    single_app: Any, log_index: LogIndex
) -> None:
    deployment, admin = await prepared(single_app, log_index, "tail")
    documents = airflow3_task_lines(deployment, 12)
    log_index.write(deployment, documents[:5])
    params = {
        "dag_id": "sextant_parallel",
        "run_id": RUN_ID,
        "task_id": "sleep",
        "max_seconds": "30",
    }
    started = time.monotonic()
    async with serving(single_app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        path = f"/api/v1/deployments/{deployment}/logs/follow"
        async with http.stream("GET", path, params=params, headers=admin) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = server_sent_events(response)
            received = [await next_event(events) for _ in range(5)]
            # Appended while the client follows, in two batches.
            log_index.write(deployment, documents[5:9])
            received += [await next_event(events) for _ in range(4)]
            log_index.write(deployment, documents[9:])  # the rest, and the end mark
            received += [await next_event(events) for _ in range(3)]
            end = await next_event(events)
    assert [e.event for e in received] == ["line"] * 12
    assert [e.data["message"] for e in received] == [f"line {n}" for n in range(1, 13)]
    assert [e.id for e in received] == [str(n) for n in range(1, 13)]
    assert (end.event, end.data) == ("end", {"reason": "end_of_log"})
    assert time.monotonic() - started < 20


async def test_component_lines_appended_while_following_arrive_once_even_when_late(
    single_app: Any, log_index: LogIndex
) -> None:
    deployment, admin = await prepared(single_app, log_index, "ctail")
    now = datetime.now(UTC)
    log_index.write(
        deployment,
        component_lines(
            deployment, [("scheduler", "info", "old")], newest=now - timedelta(hours=1)
        ),
    )
    async with serving(single_app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        params = {
            "component": "scheduler",
            "max_seconds": "30",
            "since": (now - timedelta(seconds=60)).isoformat(),
        }
        path = f"/api/v1/deployments/{deployment}/logs/follow"
        async with http.stream("GET", path, params=params, headers=admin) as response:
            assert response.status_code == 200
            events = server_sent_events(response)
            log_index.write(
                deployment,
                component_lines(
                    deployment,
                    [
                        ("scheduler", "info", "first"),
                        ("workers", "info", "not mine"),
                        ("scheduler", "warning", "second"),
                    ],
                    newest=datetime.now(UTC),
                ),
            )
            received = [await next_event(events) for _ in range(2)]
            # A line shipped late: its time is before the newest line already sent.
            log_index.write(
                deployment,
                component_lines(
                    deployment,
                    [("scheduler", "error", "late")],
                    newest=datetime.fromisoformat(received[-1].data["timestamp"])
                    - timedelta(seconds=2),
                ),
            )
            received.append(await next_event(events))
            # Nothing is sent twice: the next line is a new one.
            log_index.write(
                deployment,
                component_lines(
                    deployment, [("scheduler", "info", "third")], newest=datetime.now(UTC)
                ),
            )
            received.append(await next_event(events))
    assert [e.data["message"] for e in received] == ["first", "second", "late", "third"]
    assert [e.data["component"] for e in received] == ["scheduler"] * 4
    assert len({e.id for e in received}) == 4


async def test_a_tail_ends_at_its_time_limit(single_app: Any, log_index: LogIndex) -> None:
    deployment, admin = await prepared(single_app, log_index, "limit")
    started = time.monotonic()
    async with serving(single_app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        path = f"/api/v1/deployments/{deployment}/logs/follow"
        async with http.stream("GET", path, params={"max_seconds": "2"}, headers=admin) as response:
            events = [event async for event in server_sent_events(response)]
    assert [(e.event, e.data) for e in events] == [("end", {"reason": "time_limit"})]
    assert 1.9 <= time.monotonic() - started < 8


async def test_a_tail_the_client_leaves_stops_at_once(single_app: Any, log_index: LogIndex) -> None:
    deployment, admin = await prepared(single_app, log_index, "leave")
    before = FOLLOWS_ACTIVE._value.get()
    async with serving(single_app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        path = f"/api/v1/deployments/{deployment}/logs/follow"
        async with http.stream(
            "GET", path, params={"max_seconds": "600"}, headers=admin
        ) as response:
            assert response.status_code == 200
            for _ in range(100):
                if FOLLOWS_ACTIVE._value.get() == before + 1:
                    break
                await asyncio.sleep(0.05)
            assert FOLLOWS_ACTIVE._value.get() == before + 1
        # The client has closed its connection; the server notices and ends the tail.
        left = time.monotonic()
        while FOLLOWS_ACTIVE._value.get() != before and time.monotonic() - left < 5:
            await asyncio.sleep(0.05)
        assert FOLLOWS_ACTIVE._value.get() == before
        assert time.monotonic() - left < 3
        # The server still serves.
        assert (await http.get("/api/v1/deployments", headers=admin)).status_code == 200


async def test_following_a_task_needs_its_dag_run_and_task(
    single_app: Any, log_index: LogIndex
) -> None:
    deployment, admin = await prepared(single_app, log_index, "half")
    async with asgi_client(single_app) as client:
        response = await client.get(
            f"/api/v1/deployments/{deployment}/logs/follow",
            params={"dag_id": "etl"},
            headers=admin,
        )
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert fields == {"query.run_id", "query.task_id"}
