"""The local runtime's log shipper against a real Elasticsearch.

Log files shaped as a local deployment writes them (a worker's JSON task lines as Airflow 3's
upload prints them, JSON component lines, a stray text line, a line still being written) go
through the shipper and are read back through the log service: every line once, in order, the
try's end marked; nothing is lost or doubled when Elasticsearch cannot be reached or a batch is
sent twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.integrations.elasticsearch import ElasticsearchClient
from app.integrations.errors import PermanentError, TransientError
from app.logs.schemas import ComponentLogFilter, LogComponent, TaskTry
from app.logs.service import logs
from app.logs.shipping import POSITIONS_FILE, LogShipper, task_log_file
from app.observability.elasticsearch_target import log_data_stream
from app.runtime.local_supervisor import rotate_log
from tests.harness.components import ElasticsearchServer
from tests.harness.process import free_port
from tests.integration.logs.conftest import WORKSPACE, LogIndex, unique

RUN_ID = "manual__2026-12-06T10:00:00.000000+00:00"


@pytest.fixture
async def client(elasticsearch_server: ElasticsearchServer) -> AsyncIterator[ElasticsearchClient]:
    client = ElasticsearchClient(elasticsearch_server.url, timeout=10)
    yield client
    await client.aclose()


def task_line(n: int, *, try_number: int = 1, event: str | None = None) -> dict[str, Any]:
    """A line of a finished try as the worker's upload prints it (Airflow 3.3)."""
    log_id = f"etl-load-{RUN_ID}--1-{try_number}"
    return {
        "timestamp": f"2026-12-06T10:00:{n // 1000:02d}.{n % 1000:03d}000Z",
        "level": "info",
        "event": event or f"row batch {n}",
        "map_index": -1,
        "try_number": try_number,
        "dag_id": "etl",
        "task_id": "load",
        "run_id": RUN_ID,
        "logger": "task",
        "log_id": log_id,
        "offset": n,
    }


def deployment_home(tmp_path: Path, task_lines: int) -> Path:
    """A local deployment's folder: its try's local file and the worker's log so far."""
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    local = task_log_file(home / "airflow" / "logs", task_line(1))
    local.parent.mkdir(parents=True)
    local.write_text("".join(json.dumps({"event": f"x{n}"}) + "\n" for n in range(task_lines)))
    return home


async def read_task_log(client: ElasticsearchClient, stream: str, try_number: int = 1) -> Any:
    await client.refresh(stream)
    task_try = TaskTry(dag_id="etl", run_id=RUN_ID, task_id="load", try_number=try_number)
    lines: list[Any] = []
    after = None
    while True:
        page = await logs.task_log(client, stream, task_try, after=after, limit=700)
        lines += page.lines
        if page.end_of_log or not page.lines:
            return lines, page.end_of_log
        after = page.next_after


async def test_worker_and_component_lines_arrive_once_in_order_with_the_end_marked(
    client: ElasticsearchClient, log_index: LogIndex, tmp_path: Path
) -> None:
    deployment = unique("ship")
    log_index.prepare(deployment)
    stream = log_data_stream(deployment)
    count = 2500
    home = deployment_home(tmp_path, count)
    worker = home / "logs" / "workers-1.log"
    component = {"timestamp": "2026-12-06T09:59:59.000000Z", "level": "info", "event": "started"}
    first_half = [json.dumps(component), "celery@vm ready."]
    first_half += [json.dumps(task_line(n)) for n in range(1, 1201)]
    # The last line is still being written: it must wait for its newline.
    worker.write_text("\n".join(first_half) + "\n" + json.dumps(task_line(1201))[:40])
    scheduler_line = {"timestamp": "2026-12-06T10:00:01.5Z", "level": "error", "event": "boom"}
    (home / "logs" / "scheduler.log").write_text(json.dumps(scheduler_line) + "\n")
    # Not an Airflow component: not shipped.
    (home / "logs" / "redis.log").write_text("1:M * Ready to accept connections\n")

    shipper = LogShipper(client, host="vm", batch=500)
    report = await shipper.ship(deployment, WORKSPACE, home)
    assert (report.lines, report.end_marks) == (1203, 0)
    lines, ended = await read_task_log(client, stream)
    assert [line["offset"] for line in lines] == [str(n) for n in range(1, 1201)]
    assert not ended

    rest = json.dumps(task_line(1201))[40:] + "\n"
    rest += "".join(json.dumps(task_line(n)) + "\n" for n in range(1202, count + 1))
    with worker.open("a") as handle:
        handle.write(rest)
    report = await shipper.ship(deployment, WORKSPACE, home)
    assert (report.lines, report.end_marks) == (count - 1200, 1)
    lines, ended = await read_task_log(client, stream)
    assert [line["offset"] for line in lines] == [str(n) for n in range(1, count + 1)]
    assert lines[-1]["message"] == f"row batch {count}"
    assert all(line["host"] == "vm" for line in lines)
    assert ended

    # Another round finds nothing new; the same lines sent again are not stored twice.
    assert (await shipper.ship(deployment, WORKSPACE, home)).lines == 0
    (home / POSITIONS_FILE).unlink()
    again = await shipper.ship(deployment, WORKSPACE, home)
    assert again.lines == count + 3
    await client.refresh(stream)
    assert await client.count(stream) == count + 2 + 1 + 1  # + the text line, scheduler, mark

    page = await logs.component_logs(
        client, stream, ComponentLogFilter(component=LogComponent.SCHEDULER), cursor=None, limit=10
    )
    assert [(line.level, line.message, line.component) for line in page.lines] == [
        ("error", "boom", "scheduler")
    ]
    page = await logs.component_logs(
        client, stream, ComponentLogFilter(text="ready"), cursor=None, limit=10
    )
    assert [(line.message, line.component) for line in page.lines] == [
        ("celery@vm ready.", "workers")
    ]


async def test_lines_wait_while_elasticsearch_cannot_be_reached_and_none_is_lost(
    client: ElasticsearchClient, log_index: LogIndex, tmp_path: Path
) -> None:
    deployment = unique("ship-down")
    log_index.prepare(deployment)
    home = deployment_home(tmp_path, 3)
    worker = home / "logs" / "workers-1.log"
    worker.write_text("".join(json.dumps(task_line(n)) + "\n" for n in (1, 2)))
    # Nothing listens on this port: the connection is refused, as when Elasticsearch is down.
    down = ElasticsearchClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(TransientError):
            await LogShipper(down, host="vm").ship(deployment, WORKSPACE, home)
    finally:
        await down.aclose()
    assert not (home / POSITIONS_FILE).exists()

    with worker.open("a") as handle:
        handle.write(json.dumps(task_line(3)) + "\n")
    report = await LogShipper(client, host="vm").ship(deployment, WORKSPACE, home)
    assert (report.lines, report.end_marks) == (3, 1)
    lines, ended = await read_task_log(client, log_data_stream(deployment))
    assert [line["message"] for line in lines] == ["row batch 1", "row batch 2", "row batch 3"]
    assert ended


async def test_without_the_deployments_index_template_nothing_is_created(
    client: ElasticsearchClient, elasticsearch_server: ElasticsearchServer, tmp_path: Path
) -> None:
    deployment = unique("ship-none")
    home = deployment_home(tmp_path, 1)
    (home / "logs" / "scheduler.log").write_text("text\n")
    with pytest.raises(PermanentError, match="data stream"):
        await LogShipper(client, host="vm").ship(deployment, WORKSPACE, home)
    assert not (home / POSITIONS_FILE).exists()
    resolved = httpx.get(
        f"{elasticsearch_server.url}/_resolve/index/{log_data_stream(deployment)}*"
    )
    assert resolved.json() == {"indices": [], "aliases": [], "data_streams": []}


async def test_a_rotated_log_is_shipped_to_its_end_then_from_the_start_of_the_new_one(
    client: ElasticsearchClient, log_index: LogIndex, tmp_path: Path
) -> None:
    deployment = unique("ship-rotate")
    log_index.prepare(deployment)
    count = 300
    home = deployment_home(tmp_path, count)
    worker = home / "logs" / "workers-1.log"
    shipper = LogShipper(client, host="vm")
    with worker.open("ab") as writer:  # the worker's output, as the supervisor opens it

        def write(numbers: range) -> None:
            writer.write(b"".join(json.dumps(task_line(n)).encode() + b"\n" for n in numbers))
            writer.flush()

        write(range(1, 101))
        assert (await shipper.ship(deployment, WORKSPACE, home)).lines == 100
        write(range(101, 151))  # not shipped yet when the log is rotated
        assert rotate_log(worker, 1024)
        write(range(151, count + 1))  # the emptied file, from offset 0 again
    report = await shipper.ship(deployment, WORKSPACE, home)
    assert (report.lines, report.end_marks) == (count - 100, 1)
    lines, ended = await read_task_log(client, log_data_stream(deployment))
    assert [line["offset"] for line in lines] == [str(n) for n in range(1, count + 1)]
    assert ended
    # Nothing more, and a later rotation of an already shipped file sends nothing twice.
    assert (await shipper.ship(deployment, WORKSPACE, home)).lines == 0
    assert rotate_log(worker, 1024)
    assert (await shipper.ship(deployment, WORKSPACE, home)).lines == 0
    await client.refresh(log_data_stream(deployment))
    assert await client.count(log_data_stream(deployment)) == count + 1


async def test_a_line_the_stream_refuses_goes_as_a_plain_line_and_holds_nothing_back(
    client: ElasticsearchClient, log_index: LogIndex, tmp_path: Path
) -> None:
    deployment = unique("ship-refused")
    log_index.prepare(deployment)
    stream = log_data_stream(deployment)
    home = deployment_home(tmp_path, 0)
    lines = [
        {"timestamp": "2026-12-06T10:00:00.000001Z", "level": "info", "event": "a", "rows": 5},
        # `rows` is a number in this stream now: a word there is refused.
        {"timestamp": "2026-12-06T10:00:00.000002Z", "level": "warning", "event": "b",
         "rows": "many"},
        {"timestamp": "2026-12-06T10:00:00.000003Z", "level": "info", "event": "c", "rows": 7},
    ]  # fmt: skip
    (home / "logs" / "scheduler.log").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = await LogShipper(client, host="vm").ship(deployment, WORKSPACE, home)
    assert (report.lines, report.plain, report.dropped) == (3, 1, 0)
    await client.refresh(stream)
    page = await logs.component_logs(
        client, stream, ComponentLogFilter(component=LogComponent.SCHEDULER), cursor=None, limit=10
    )
    assert [(line.message, line.level) for line in page.lines] == [
        ("c", "info"), ("b", "warning"), ("a", "info"),
    ]  # fmt: skip
    body = {"query": {"term": {"event.keyword": "b"}}}
    [hit] = (await client.search(stream, body))["hits"]["hits"]
    assert "rows" not in hit["_source"]
    assert json.loads(hit["_source"]["sextant_fields"])["rows"] == "many"
    assert "failed to parse field [rows]" in hit["_source"]["sextant_refused"]
    # The position moved past it: nothing is sent again.
    assert (await LogShipper(client, host="vm").ship(deployment, WORKSPACE, home)).lines == 0
