"""HTTP routes of task and component logs, and their live tail as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.sse import format_sse_event
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from app.api.errors import API_ERRORS, error_responses
from app.core.context import ClockDep, SessionDep
from app.core.errors import InvalidInput
from app.core.names import NAME_MAX_LENGTH
from app.logs.dependencies import LogStoreDep
from app.logs.schemas import (
    DEFAULT_COMPONENT_PAGE,
    DEFAULT_TASK_PAGE,
    MAX_COMPONENT_PAGE,
    MAX_TASK_PAGE,
    OFFSET_PATTERN,
    ComponentLogFilter,
    ComponentLogPage,
    LogComponent,
    LogLevel,
    TaskLogPage,
    TaskTry,
)
from app.logs.service import Follow, FollowEvent, logs
from app.tokens.dependencies import PrincipalDep

router = APIRouter(tags=["logs"], responses={**API_ERRORS, **error_responses(503)})

# Houston ends its log subscription after 20 minutes; a client that wants more reconnects with
# Last-Event-ID and continues where it was.
MAX_FOLLOW_SECONDS = 1200
DEFAULT_FOLLOW_SECONDS = 300
POLL_SECONDS = 1.0  # as Houston's log subscription
# Airflow's ID_LEN: the longest dag, task and run id.
ID_MAX_LENGTH = 250

DeploymentName = Annotated[str, Path(max_length=NAME_MAX_LENGTH, description="Deployment name")]
DagId = Annotated[str, Path(max_length=ID_MAX_LENGTH, description="DAG id")]
# Run ids carry ':' and '+' (manual__2026-11-24T10:00:00+00:00); both are legal in a path
# segment and need no encoding, and Airflow allows no '/' in a run id.
RunId = Annotated[str, Path(max_length=ID_MAX_LENGTH, description="DAG run id")]
TaskId = Annotated[str, Path(max_length=ID_MAX_LENGTH, description="Task id")]
TryNumber = Annotated[int, Query(ge=1, le=2**31 - 1, description="Try of the task, from 1")]
MapIndex = Annotated[
    int, Query(ge=-1, le=2**31 - 1, description="Index of a mapped task; -1 when not mapped")
]
After = Annotated[
    str | None,
    Query(
        pattern=OFFSET_PATTERN,
        max_length=19,
        description="Offset cursor: `next_after` of the previous page",
    ),
]
ComponentQuery = Annotated[LogComponent | None, Query(description="Only this component's")]
LevelQuery = Annotated[LogLevel | None, Query(description="This level and the levels above it")]
TextQuery = Annotated[
    str | None, Query(min_length=1, max_length=500, description="Lines containing this phrase")
]
Since = Annotated[datetime | None, Query(description="Lines at or after this time (UTC if naive)")]


class EventStream(StreamingResponse):
    """A `text/event-stream` response (server-sent events)."""

    media_type = "text/event-stream"


FOLLOW_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "Server-sent events: `line` (data: one log line as JSON, id: a cursor "
        "for Last-Event-ID), `unavailable` (Elasticsearch went away; the tail keeps trying), "
        "and a last `end` (data: reason `end_of_log` or `time_limit`)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/deployments/{name}/logs/tasks/{dag_id}/{run_id}/{task_id}", response_model=TaskLogPage
)
async def read_task_log(
    name: DeploymentName,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    session: SessionDep,
    principal: PrincipalDep,
    store: LogStoreDep,
    try_number: TryNumber = 1,
    map_index: MapIndex = -1,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TASK_PAGE, description="Lines")] = DEFAULT_TASK_PAGE,
) -> TaskLogPage:
    """A task try's log lines after a cursor, in order; `end_of_log` once Airflow marked the end."""
    stream = await logs.data_stream(session, principal, name)
    task_try = TaskTry(
        dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=try_number, map_index=map_index
    )
    return await logs.task_log(store, stream, task_try, after=after, limit=limit)


@router.get("/deployments/{name}/logs", response_model=ComponentLogPage)
async def search_component_logs(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    store: LogStoreDep,
    component: ComponentQuery = None,
    level: LevelQuery = None,
    q: TextQuery = None,
    since: Since = None,
    until: Annotated[
        datetime | None, Query(description="Lines before this time (UTC if naive)")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=400, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_COMPONENT_PAGE, description="Lines")
    ] = DEFAULT_COMPONENT_PAGE,
) -> ComponentLogPage:
    """The deployment's component logs (scheduler, api-server, workers...), newest first."""
    stream = await logs.data_stream(session, principal, name)
    wanted = ComponentLogFilter(
        component=component, level=level, text=q, since=_utc(since), until=_utc(until)
    )
    return await logs.component_logs(store, stream, wanted, cursor=cursor, limit=limit)


# `response_class=Response` (no media type of its own) keeps the errors documented as JSON;
# the stream's own type is stated in FOLLOW_RESPONSES.
@router.get("/deployments/{name}/logs/follow", response_class=Response, responses=FOLLOW_RESPONSES)
async def follow_logs(
    name: DeploymentName,
    session: SessionDep,
    principal: PrincipalDep,
    store: LogStoreDep,
    clock: ClockDep,
    component: ComponentQuery = None,
    level: LevelQuery = None,
    q: TextQuery = None,
    since: Annotated[
        datetime | None, Query(description="Component lines from this time; default: now")
    ] = None,
    dag_id: Annotated[
        str | None, Query(max_length=ID_MAX_LENGTH, description="Follow this task try instead")
    ] = None,
    run_id: Annotated[str | None, Query(max_length=ID_MAX_LENGTH)] = None,
    task_id: Annotated[str | None, Query(max_length=ID_MAX_LENGTH)] = None,
    try_number: TryNumber = 1,
    map_index: MapIndex = -1,
    after: After = None,
    max_seconds: Annotated[
        int,
        Query(ge=1, le=MAX_FOLLOW_SECONDS, description="End the stream after this many seconds"),
    ] = DEFAULT_FOLLOW_SECONDS,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=400, include_in_schema=False)
    ] = None,
) -> EventStream:
    """Live tail of component logs, or of one task try (with dag_id, run_id and task_id).

    Bounded by `max_seconds`; a task try's tail also ends at its end-of-log mark. A reconnecting
    EventSource sends Last-Event-ID and continues after the last line it received.
    """
    stream = await logs.data_stream(session, principal, name)
    task_fields = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id}
    follow: Follow
    if any(task_fields.values()):
        missing = [key for key, value in task_fields.items() if not value]
        if missing:
            raise InvalidInput(
                "following a task try needs dag_id, run_id and task_id",
                [{"field": f"query.{key}", "message": "required"} for key in missing],
            )
        task_try = TaskTry(
            dag_id=dag_id or "",
            run_id=run_id or "",
            task_id=task_id or "",
            try_number=try_number,
            map_index=map_index,
        )
        resume = after if after is not None else last_event_id
        follow = await logs.follow_task(
            store, stream, task_try, after=resume, max_seconds=max_seconds, interval=POLL_SECONDS
        )
    else:
        wanted = ComponentLogFilter(component=component, level=level, text=q)
        follow = await logs.follow_components(
            store,
            stream,
            wanted,
            since=_utc(since) or clock.now(),
            resume=last_event_id,
            max_seconds=max_seconds,
            interval=POLL_SECONDS,
        )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return EventStream(_server_sent(follow), headers=headers)


async def _server_sent(follow: Follow) -> AsyncIterator[bytes]:
    # A reconnecting client waits 3 s rather than the browser's default.
    yield b"retry: 3000\n\n"
    async for event in follow.events():
        yield _encode(event)


def _encode(event: FollowEvent | None) -> bytes:
    if event is None:
        return b": keep-alive\n\n"
    data = event.data
    text = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return format_sse_event(data_str=text, event=event.event, id=event.id)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
