"""Logs of a local deployment with real Airflow 3, from the worker to Sextant's API and back
into Airflow's own UI, through a real Elasticsearch.

The local runtime renders the deployment's remote-logging options (app.logs.airflow_config), so
a worker prints each finished try as JSON lines in its log file; Sextant's shipper sends them,
and the components' lines, to the deployment's data stream. Sextant's log service then reads the
try in order with its end marked, and Airflow's api-server reads the same try from the data
stream (its `index_patterns` name that stream only).

About a minute: it starts a whole Celery deployment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.deployments.spec import Executor
from app.deployments.validation import merge_components
from app.integrations.airflow import AirflowApi
from app.integrations.elasticsearch import ElasticsearchClient
from app.logs.schemas import ComponentLogFilter, LogComponent, TaskTry
from app.logs.service import logs
from app.logs.shipping import LogShipper
from app.observability.elasticsearch_target import log_data_stream
from app.provisioning.targets import DeploymentView
from app.runtime.local import LocalRuntime
from tests.harness.components import ElasticsearchServer
from tests.integration.logs.conftest import WORKSPACE, LogIndex
from tests.integration.runtime._local import (
    E2E_DAG,
    E2E_DAG_ID,
    local_settings,
    require_local_runtime,
    state_dir,
    until,
)

pytestmark = pytest.mark.timeout(400)
__all__ = ["state_dir"]  # a fixture, imported for this module

NAME = "lima"


@pytest.fixture
async def runtime(
    state_dir: Path, elasticsearch_server: ElasticsearchServer
) -> AsyncIterator[LocalRuntime]:
    settings = local_settings(state_dir)
    require_local_runtime(settings)
    runtime = LocalRuntime(settings, elasticsearch_url=elasticsearch_server.url)
    await runtime.start()
    yield runtime
    await runtime.shutdown()


@pytest.fixture
async def client(elasticsearch_server: ElasticsearchServer) -> AsyncIterator[ElasticsearchClient]:
    client = ElasticsearchClient(elasticsearch_server.url, timeout=10)
    yield client
    await client.aclose()


async def test_a_tasks_log_reaches_sextants_api_and_airflows_own_reader(
    runtime: LocalRuntime, client: ElasticsearchClient, log_index: LogIndex
) -> None:
    log_index.prepare(NAME)
    components, _ = merge_components(Executor.CELERY, {}, None)
    deployment = DeploymentView(
        name=NAME, workspace=WORKSPACE, executor=Executor.CELERY.value, airflow_version="3.3.2",
        components=components, generation=1, extra={"worker_concurrency": 2},
    )  # fmt: skip
    runtime.dags_folder(NAME).mkdir(parents=True)
    (runtime.dags_folder(NAME) / f"{E2E_DAG_ID}.py").write_text(E2E_DAG)
    await runtime.apply(deployment, runtime.render(deployment))

    async def running() -> bool:
        return (await runtime.status(deployment)).all_running

    await until(
        running, 150, f"{NAME} to run",
        lambda: "\n".join(runtime.progress(NAME)) + "\n" + runtime.failure_report(NAME),
    )  # fmt: skip
    api_url = runtime.api_url(NAME)
    assert api_url is not None
    api = AirflowApi(api_url)

    async def parsed() -> bool:
        return await api.dag_exists(E2E_DAG_ID)

    await until(parsed, 90, "the DAG to be parsed")
    await api.unpause(E2E_DAG_ID)
    run_id = await api.trigger(E2E_DAG_ID)

    async def finished() -> bool:
        return await api.run_state(E2E_DAG_ID, run_id) in ("success", "failed")

    await until(finished, 90, "the DAG run to finish")
    assert await api.run_state(E2E_DAG_ID, run_id) == "success"

    shipper = LogShipper(client)
    stream = log_data_stream(NAME)
    task_try = TaskTry(dag_id=E2E_DAG_ID, run_id=run_id, task_id="hello")
    page = None

    async def shipped_to_the_end() -> bool:
        nonlocal page
        await shipper.ship(NAME, WORKSPACE, runtime.home(NAME))
        await client.refresh(stream)
        page = await logs.task_log(client, stream, task_try, after=None, limit=1000)
        return page.end_of_log

    await until(shipped_to_the_end, 60, "the try's log to be shipped to its end", every=2)
    assert page is not None
    messages = [line["message"] for line in page.lines]
    assert any(m.startswith("hello from") for m in messages), messages
    offsets = [int(line["offset"]) for line in page.lines]
    assert offsets == list(range(1, len(offsets) + 1))
    assert "end_of_log" not in messages

    # The scheduler's own lines, as component logs.
    scheduler = await logs.component_logs(
        client, stream, ComponentLogFilter(component=LogComponent.SCHEDULER),
        cursor=None, limit=50,
    )  # fmt: skip
    assert scheduler.lines
    assert {line.component for line in scheduler.lines} == {"scheduler"}

    # Airflow's api-server reads the same try from the deployment's data stream.
    content = await api.task_log(E2E_DAG_ID, run_id, "hello")
    events = [str(item.get("event")) for item in content if isinstance(item, dict)]
    assert any(e.startswith("hello from") for e in events), events
    # The source it names is the shipped documents' host, not the worker's local file.
    source = events.index("::group::Log message source details") + 1
    assert events[source] == shipper.host, events[:5]
