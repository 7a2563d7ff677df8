"""Fixtures of the log API tests: apps reading the session's real Elasticsearch, documents shaped
as Airflow writes them, and a real HTTP server for the live tail.

Documents are written straight to Elasticsearch's bulk API (`create`, as data streams require),
not through the code under test, and shaped as they arrive through Sextant's FluentD pipeline
(reference: airflow.md section 4.2; `fluentd/pipeline.conf`):

- Airflow 3 task lines as the upload path prints them (`timestamp`, `level`, `event`,
  `logger`, `log_id`, `offset` = line number), plus the shipper's `@timestamp`, `component`,
  `host`, `deployment`, `workspace`;
- Airflow 2 task lines as its JSON formatter writes them (`message`, `levelname`, `asctime`,
  `filename`, `lineno`, `dag_id`, `task_id`, `execution_date`, `try_number` as text, `log_id`,
  `offset` in epoch nanoseconds);
- component lines as Airflow 3.2's `json_logs` prints them (`timestamp`, `level`, `event`,
  `logger`, `filename`, `lineno`), with the shipper's `offset` (event time in nanoseconds) and
  no `log_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.core.clock import SystemClock
from app.core.migrations import upgrade
from app.core.security import Role
from app.core.settings import DatabaseSettings, ElasticsearchSettings, SchedulerSettings, Settings
from app.main import create_app
from app.observability.elasticsearch_target import index_template, log_data_stream
from app.tokens.service import CLI_PRINCIPAL, tokens
from tests.harness.components import ElasticsearchServer
from tests.harness.process import free_port

WORKSPACE = "data-team"
RUN_ID = "manual__2026-11-24T10:00:00.123456+00:00"
_sequence = itertools.count()


def unique(stem: str) -> str:
    """A deployment name no other test of this session uses (the Elasticsearch is shared)."""
    return f"{stem}{os.getpid() % 1000}x{next(_sequence)}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _nanos(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def _shipped(deployment: str, component: str, host: str, at: datetime) -> dict[str, Any]:
    """What Sextant's FluentD pipeline adds to every record."""
    return {
        "@timestamp": _iso(at),
        "component": component,
        "host": host,
        "deployment": deployment,
        "workspace": WORKSPACE,
    }


def airflow3_task_lines(
    deployment: str,
    count: int,
    *,
    dag_id: str = "sextant_parallel",
    task_id: str = "sleep",
    run_id: str = RUN_ID,
    try_number: int = 1,
    map_index: int = -1,
    start: datetime | None = None,
    first_offset: int = 1,
    end_mark: bool = True,
) -> list[dict[str, Any]]:
    """A try's log as Airflow 3's upload path prints it, through the shipper."""
    start = start or datetime.now(UTC)
    log_id = f"{dag_id}-{task_id}-{run_id}-{map_index}-{try_number}"
    documents = []
    for n in range(count + (1 if end_mark else 0)):
        offset = first_offset + n
        at = start + timedelta(microseconds=offset)
        line = {
            "timestamp": _iso(at),
            "level": "info" if offset % 7 else "warning",
            "event": f"line {offset}" if n < count else "end_of_log",
            "logger": "task.stdout" if offset % 3 else "airflow.task",
            "log_id": log_id,
            "offset": offset,
        }
        if offset % 3:
            line["chan"] = "stdout"
        documents.append(line | _shipped(deployment, "workers", "worker-0", at))
    return documents


def airflow2_task_lines(
    deployment: str, count: int, *, start: datetime | None = None
) -> list[dict[str, Any]]:
    """A try's log as Airflow 2's handler writes it to stdout with json_format."""
    start = start or datetime.now(UTC)
    run_id = "scheduled__2026-11-23T00:00:00+00:00"
    log_id = f"legacy-extract-{run_id}--1-1"
    documents = []
    for n in range(count + 1):
        at = start + timedelta(milliseconds=n)
        documents.append(
            {
                "asctime": at.strftime("%Y-%m-%d %H:%M:%S,%f")[:-3],
                "filename": "taskinstance.py",
                "lineno": 1200 + n,
                "levelname": "INFO",
                "message": f"legacy {n}" if n < count else "end_of_log",
                "offset": _nanos(at),
                "dag_id": "legacy",
                "task_id": "extract",
                "execution_date": "2026_11_23T00_00_00_000000",
                "try_number": "1",
                "log_id": log_id,
            }
            | _shipped(deployment, "workers", "worker-1", at)
        )
    return documents


def component_lines(
    deployment: str,
    lines: list[tuple[str, str, str]],
    *,
    newest: datetime | None = None,
    spacing: timedelta = timedelta(seconds=1),
) -> list[dict[str, Any]]:
    """Component lines (component, level, text), the last one at `newest`, as json_logs prints
    them, through the shipper."""
    newest = newest or datetime.now(UTC)
    documents = []
    for n, (component, level, text) in enumerate(lines):
        at = newest - spacing * (len(lines) - 1 - n)
        documents.append(
            {
                "timestamp": _iso(at),
                "level": level,
                "event": text,
                "logger": f"airflow.{component}",
                "filename": "job.py",
                "lineno": 100 + n,
                "offset": _nanos(at),
                "log_id": None,
            }
            | _shipped(deployment, component, f"{component}-0", at)
        )
    return documents


@dataclass
class LogIndex:
    """Writes documents into deployments' data streams, bypassing Sextant."""

    url: str

    def prepare(self, deployment: str, retention_days: int = 15) -> None:
        """Store the deployment's index template, as provisioning would."""
        body = index_template(deployment, WORKSPACE, retention_days)
        response = httpx.put(
            f"{self.url}/_index_template/{log_data_stream(deployment)}", json=body, timeout=30
        )
        response.raise_for_status()

    def write(self, deployment: str, documents: list[dict[str, Any]]) -> None:
        """Append documents (bulk `create`) and make them searchable."""
        stream = log_data_stream(deployment)
        for start in range(0, len(documents), 5000):
            lines = []
            for document in documents[start : start + 5000]:
                lines += [json.dumps({"create": {"_index": stream}}), json.dumps(document)]
            response = httpx.post(
                f"{self.url}/_bulk",
                params={"refresh": "true"},
                content="\n".join(lines) + "\n",
                headers={"content-type": "application/x-ndjson"},
                timeout=60,
            )
            response.raise_for_status()
            assert not response.json()["errors"], response.text[:500]

    def searches(self) -> int:
        """How many searches (shard query phases) Elasticsearch has run in all."""
        stats = httpx.get(
            f"{self.url}/_nodes/stats/indices/search",
            params={"filter_path": "nodes.*.indices.search.query_total"},
            timeout=30,
        ).json()
        return sum(n["indices"]["search"]["query_total"] for n in stats["nodes"].values())


@pytest.fixture
def log_index(elasticsearch_server: ElasticsearchServer) -> LogIndex:
    """Direct access to the session's Elasticsearch."""
    return LogIndex(elasticsearch_server.url)


def es_settings(database_url: str, elasticsearch_url: str) -> Settings:
    """An app reading logs from the Elasticsearch; no periodic jobs (they would search too)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database=DatabaseSettings(url=database_url),
        scheduler=SchedulerSettings(enabled=False),
        elasticsearch=ElasticsearchSettings(url=elasticsearch_url, timeout=5),
    )


@pytest.fixture
def settings(database_url: str, elasticsearch_server: ElasticsearchServer) -> Settings:
    """The shared `app` fixture's settings, with the session's Elasticsearch."""
    return es_settings(database_url, elasticsearch_server.url)


@pytest.fixture
async def single_app(
    tmp_path: Path, elasticsearch_server: ElasticsearchServer
) -> AsyncIterator[Any]:
    """A running app on an SQLite file of its own and the wall clock, for behaviours that do
    not depend on the database (live tails, outages), so they run once rather than per backend."""
    url = f"sqlite:///{tmp_path / 'sextant.db'}"
    await asyncio.to_thread(upgrade, url)
    application = create_app(es_settings(url, elasticsearch_server.url), SystemClock())
    async with application.router.lifespan_context(application):
        yield application


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """The app behind a real uvicorn on 127.0.0.1 (httpx's ASGI transport buffers streams)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning",
        timeout_graceful_shutdown=3,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class ServerSentEvent:
    event: str
    data: Any
    id: str | None


async def server_sent_events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The events of a text/event-stream response, as they arrive (comments skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield ServerSentEvent(
                    fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


@contextlib.contextmanager
def elasticsearch_stopped(server: ElasticsearchServer) -> Iterator[None]:
    """Elasticsearch down for the block, and back (the session shares it) afterwards."""
    server.stop()
    try:
        yield
    finally:
        server.start()


async def issue_token(
    app: Any, role: Role, workspace: str | None = None, deployment: str | None = None
) -> dict[str, str]:
    """Headers with a new token, issued as the CLI would."""
    context = app.state.context
    async with context.sessionmaker() as session:
        created = await tokens.create(
            session,
            CLI_PRINCIPAL,
            name=f"logs-{next(_sequence)}",
            role=role,
            workspace_name=workspace,
            deployment_name=deployment,
        )
        await session.commit()
    return {"Authorization": f"Bearer {created.token}"}


async def register(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    deployment: str,
    *,
    workspace: str = WORKSPACE,
    retention_days: int = 15,
) -> None:
    """Create the workspace (if needed) and the deployment through the API."""
    created = await client.post("/api/v1/workspaces", json={"name": workspace}, headers=admin)
    assert created.status_code in (201, 409), created.text
    body = {"name": deployment, "log_retention_days": retention_days}
    created = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments", json=body, headers=admin
    )
    assert created.status_code == 201, created.text


@contextlib.asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sextant.test") as client:
        yield client
