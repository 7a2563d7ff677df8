"""A real Airflow deployment on the local runtime, from the API to a successful DAG run and back.

Every hop is real: Sextant (in-process, its periodic jobs on, PostgreSQL as its database) with
`SEXTANT_RUNTIME=local` starts PostgreSQL, PgBouncer, Redis, statsd_exporter and Airflow 3
(api-server, scheduler, dag-processor, triggerer, a Celery worker, Flower) as supervised
processes; its Prometheus target writes the deployment's file_sd file with the exporter address
the runtime gives; a real Prometheus scrapes it every second; the deployment turns `healthy` once
the scheduler heartbeat is seen there. A DAG is triggered through Airflow's REST API and runs on
the Celery worker to success; its task log, shipped by Sextant to the deployment's Elasticsearch
data stream, is read back through Sextant's log API. Deleting the deployment through the API
stops every process, drops its database and removes its folder, its scrape target and its logs.

Slow by nature (Airflow starts in 20-60 s on two cores); about 1-2 minutes in all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from app.integrations.airflow import AirflowApi
from app.observability.elasticsearch_target import log_data_stream
from app.observability.prometheus_target import file_sd_name
from app.runtime.local import database_name
from tests.harness.components import ElasticsearchServer, PrometheusServer
from tests.integration.runtime._local import (
    E2E_DAG,
    E2E_DAG_ID,
    pids_alive,
    runtime_of,
    unit_pids,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKSPACE = "data-eng"
DEPLOYMENT = "e2e-local"


async def test_a_local_deployment_runs_a_dag_and_is_deleted_cleanly(
    client: httpx.AsyncClient,
    sextant: FastAPI,
    prometheus: PrometheusServer,
    file_sd_dir: Path,
    elasticsearch_server: ElasticsearchServer,
) -> None:
    started = time.monotonic()
    runtime = runtime_of(sextant)
    # The DAG is in place before the dag-processor first looks.
    runtime.dags_folder(DEPLOYMENT).mkdir(parents=True)
    (runtime.dags_folder(DEPLOYMENT) / f"{E2E_DAG_ID}.py").write_text(E2E_DAG)

    response = await client.post("/api/v1/workspaces", json={"name": WORKSPACE})
    assert response.status_code == 201, response.text
    response = await client.post(
        f"/api/v1/workspaces/{WORKSPACE}/deployments",
        json={
            "name": DEPLOYMENT,
            "worker_concurrency": 4,
            "components": {"workers": {"replicas": 1}},
        },
    )
    assert response.status_code == 201, response.text

    async def deployment() -> dict[str, str]:
        answer = await client.get(f"/api/v1/deployments/{DEPLOYMENT}")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    last: dict[str, str] = {}

    async def healthy() -> bool:
        last.update(await deployment())
        return last["status"] == "healthy"

    def progress() -> str:
        lines = [f"status {last.get('status')}: {last.get('status_reason')}"]
        report = runtime.failure_report(DEPLOYMENT)
        return "\n".join(lines + ([report] if report else []))

    await until(healthy, 180, "the deployment to become healthy", progress)
    print(f"[{time.monotonic() - started:5.0f}s] healthy: {last['status_reason']}")
    assert "heartbeat" in last["status_reason"]

    # Healthy means Prometheus has the heartbeat, with identity attached at ingest.
    series = prometheus.query(f'airflow_scheduler_heartbeat{{deployment="{DEPLOYMENT}"}}')
    assert series, "no scheduler heartbeat series in Prometheus"
    assert series[0]["metric"]["workspace"] == WORKSPACE
    address = runtime.metrics_address(DEPLOYMENT)
    assert address is not None
    assert series[0]["metric"]["instance"] == address
    status = await runtime.status(_view_stub())
    assert status.all_running, status.problems()

    # A DAG run on the Celery worker, through Airflow's REST API.
    api_url = runtime.api_url(DEPLOYMENT)
    assert api_url is not None
    api = AirflowApi(api_url)

    async def parsed() -> bool:
        return await api.dag_exists(E2E_DAG_ID)

    await until(parsed, 90, f"the dag-processor to parse {E2E_DAG_ID}", progress)
    await api.unpause(E2E_DAG_ID)
    run_id = await api.trigger(E2E_DAG_ID)
    state = {"value": ""}

    async def finished() -> bool:
        state["value"] = await api.run_state(E2E_DAG_ID, run_id)
        return state["value"] in ("success", "failed")

    await until(finished, 90, f"DAG run {run_id} to finish", lambda: state["value"])
    assert state["value"] == "success"
    worker_log = (runtime.logs_dir(DEPLOYMENT) / "workers-1.log").read_text()
    assert "sextant_e2e" in worker_log  # the Celery worker ran it
    print(f"[{time.monotonic() - started:5.0f}s] DAG run {run_id}: success")

    # The try's log, shipped by Sextant into the deployment's data stream, through its API.
    log_path = (
        f"/api/v1/deployments/{DEPLOYMENT}/logs/tasks/{E2E_DAG_ID}/{quote(run_id, safe='')}/hello"
    )
    page: dict[str, Any] = {}

    async def log_shipped() -> bool:
        answer = await client.get(log_path)
        assert answer.status_code == 200, answer.text
        page.update(answer.json())
        return bool(page["end_of_log"])

    await until(log_shipped, 60, "the task's log to be shipped", lambda: str(page)[:500])
    messages = [line["message"] for line in page["lines"]]
    assert any(m.startswith("hello from") for m in messages), messages
    resolve = f"{elasticsearch_server.url}/_resolve/index/{log_data_stream(DEPLOYMENT)}"
    assert httpx.get(resolve).json()["data_streams"], "no data stream for the deployment"
    print(f"[{time.monotonic() - started:5.0f}s] task log read back through Sextant's API")

    # Delete through the API: processes, database, folder and scrape target all go.
    pids = unit_pids(runtime, DEPLOYMENT)
    assert len(pids) >= 8
    postgres = runtime._postgres()
    database = database_name(DEPLOYMENT)
    response = await client.delete(f"/api/v1/deployments/{DEPLOYMENT}")
    assert response.status_code in (202, 204), response.text

    async def gone() -> bool:
        answer = await client.get(f"/api/v1/deployments/{DEPLOYMENT}")
        return answer.status_code == 404

    await until(gone, 90, "the deployment to be deleted", progress)
    assert pids_alive(pids) == []
    assert not runtime.home(DEPLOYMENT).exists()
    assert not (file_sd_dir / file_sd_name(DEPLOYMENT)).exists()
    # Its logs went with it (no keep_logs asked). The test cluster (no data stream API) keeps
    # the stream with one empty write index; a late line would have landed in it.
    count = httpx.get(f"{elasticsearch_server.url}/{log_data_stream(DEPLOYMENT)}/_count")
    assert count.status_code in (200, 404), count.text
    assert count.status_code == 404 or count.json()["count"] == 0, count.text
    # The last deployment is gone, so PostgreSQL stopped; its data shows the database is too.
    assert runtime.supervisor.views("_postgres") == []
    await runtime._ensure_postgres()
    exists = postgres.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'")
    assert exists == "0"
    print(f"[{time.monotonic() - started:5.0f}s] deleted cleanly")


def _view_stub() -> object:
    from app.deployments.spec import Executor
    from app.deployments.validation import merge_components
    from app.provisioning.targets import DeploymentView

    components, _ = merge_components(Executor.CELERY, {}, None)
    return DeploymentView(
        name=DEPLOYMENT, workspace=WORKSPACE, executor=Executor.CELERY.value,
        airflow_version="3.3.2", components=components, generation=1,
    )  # fmt: skip
