"""A queue burst on a real Airflow turns into more Celery workers, and back, killing nothing.

Every hop is real: Sextant (in process, periodic jobs on, PostgreSQL) with the local runtime runs
Airflow 3 (scheduler, Celery worker, Flower, ...); the scheduler's executor gauges go through the
deployment's statsd_exporter into a real Prometheus (scraped every second); the scaling job
(every 5 s here) reads the fleet's load from there, decides, and starts or warm-stops worker
processes. A DAG of 40 parallel 45-second tasks on workers of 16 slots must bring the workers
from 1 to ceil(40 / 16) = 3 within two intervals of the load reaching Prometheus, then back to 1
after the 30 s window, with every task instance `success` on its first try.

Slow by nature (Airflow starts in 20-60 s on two cores, 40 task processes): about 5-8 minutes.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.settings import (
    ScalingSettings,
)
from app.integrations.airflow import AirflowApi
from tests.harness.components import PrometheusServer
from tests.integration.runtime._local import runtime_of, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WORKSPACE = "data-eng"
DEPLOYMENT = "e2e-scaling"
INTERVAL = 5.0
TASKS = 40
SLOTS = 16
MAX_WORKERS = 3
DAG_ID = "sextant_burst"
DAG = f"""\
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="{DAG_ID}",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks={TASKS},
):
    for i in range({TASKS}):
        BashOperator(task_id=f"work_{{i}}", bash_command="sleep 45", retries=2)
"""


@pytest.fixture
def scaling_settings() -> ScalingSettings:
    return ScalingSettings(interval=INTERVAL)


async def test_a_burst_scales_workers_up_and_back_down_without_killing_a_task(
    client: httpx.AsyncClient, sextant: FastAPI, prometheus: PrometheusServer
) -> None:
    started = time.monotonic()
    runtime = runtime_of(sextant)
    runtime.dags_folder(DEPLOYMENT).mkdir(parents=True)
    (runtime.dags_folder(DEPLOYMENT) / f"{DAG_ID}.py").write_text(DAG)

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] {message}", flush=True)

    assert (await client.post("/api/v1/workspaces", json={"name": WORKSPACE})).status_code == 201
    response = await client.post(
        f"/api/v1/workspaces/{WORKSPACE}/deployments",
        json={
            "name": DEPLOYMENT, "worker_concurrency": SLOTS, "min_workers": 1,
            "max_workers": MAX_WORKERS, "components": {"workers": {"replicas": 1}},
        },
    )  # fmt: skip
    assert response.status_code == 201, response.text
    policy = {"enabled": True, "scale_down_window_seconds": 30}
    response = await client.put(f"/api/v1/deployments/{DEPLOYMENT}/scaling-policy", json=policy)
    assert response.status_code == 200, response.text

    last: dict[str, Any] = {}

    async def healthy() -> bool:
        last.update((await client.get(f"/api/v1/deployments/{DEPLOYMENT}")).json())
        return last["status"] == "healthy"

    def progress() -> str:
        report = runtime.failure_report(DEPLOYMENT)
        return f"status {last.get('status')}: {last.get('status_reason')}\n{report}"

    await until(healthy, 240, "the deployment to become healthy", progress)
    log("healthy")

    api_url = runtime.api_url(DEPLOYMENT)
    assert api_url is not None
    api = AirflowApi(api_url, timeout=30)

    async def parsed() -> bool:
        return await api.dag_exists(DAG_ID)

    await until(parsed, 120, f"the dag-processor to parse {DAG_ID}", progress)
    await api.unpause(DAG_ID)
    run_id = await api.trigger(DAG_ID)
    log(f"triggered {run_id}")

    async def decisions() -> list[dict[str, Any]]:
        answer = await client.get(
            f"/api/v1/deployments/{DEPLOYMENT}/scaling-decisions", params={"limit": 500}
        )
        assert answer.status_code == 200, answer.text
        return list(reversed(answer.json()["items"]))  # oldest first

    wanted = min(MAX_WORKERS, math.ceil(TASKS / SLOTS))

    async def scaled_up() -> bool:
        return any(d["applied"] and d["desired"] == wanted for d in await decisions())

    await until(scaled_up, 240, f"a decision for {wanted} workers", progress)
    log("scaled up")

    state = {"value": ""}

    async def finished() -> bool:
        state["value"] = await api.run_state(DAG_ID, run_id)
        return state["value"] in ("success", "failed")

    await until(finished, 480, f"DAG run {run_id} to finish", lambda: state["value"])
    log(f"run {state['value']}")

    seen: dict[str, Any] = {}

    async def back_to_min() -> bool:
        history = await decisions()
        status = await runtime.status(_view())
        workers = next(c for c in status.components if c.component == "workers")
        seen.update(last=history[-1], workers=workers)
        down = any(d["reason"] == "scale_down" and d["desired"] == 1 for d in history)
        settled = history[-1]["desired"] == 1
        return down and settled and workers.ready == 1 and not workers.reason

    def where() -> str:
        return f"last decision {seen.get('last')}; workers {seen.get('workers')}"

    await until(back_to_min, 180, "the workers to go back to 1", where)
    log("back to one worker")

    # Every task instance succeeded on its first try: none was killed and retried.
    answer = await api._call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    instances = answer["task_instances"]
    assert len(instances) == TASKS
    assert {(ti["state"], ti["try_number"]) for ti in instances} == {("success", 1)}
    assert state["value"] == "success"

    # Up within two intervals of the load reaching Prometheus.
    history = await decisions()
    up = next(d for d in history if d["applied"] and d["desired"] == wanted)
    reached = _first_time_load_reached(prometheus, wanted, started)
    decided = datetime.fromisoformat(up["decided_at"]).timestamp()
    log(f"load needing {wanted} workers in Prometheus at {reached:.1f}, decided {decided:.1f}")
    assert decided - reached <= 2 * INTERVAL
    # And down only after the window, to the minimum, with warm shutdowns (no kill).
    downs = [d for d in history if d["reason"] == "scale_down" and d["applied"]]
    assert downs
    assert downs[-1]["desired"] == 1
    for decision in history:
        log(
            f"decision: {decision['reason']} {decision['current']} -> {decision['desired']} "
            f"(queued {decision['queued']}, running {decision['running']}) {decision['detail']}"
        )
    logs = sorted(runtime.logs_dir(DEPLOYMENT).glob("workers-*.log"))
    # The added workers really started (Celery's ready line), and left with a warm shutdown.
    assert [p.name for p in logs] == [f"workers-{i}.log" for i in range(1, wanted + 1)]
    for worker_log in logs:
        assert " ready." in worker_log.read_text(errors="replace"), worker_log.name
    # The workers that left went with Celery's warm shutdown, and no Celery task was lost.
    staying = {v.name for v in runtime.supervisor.views(DEPLOYMENT) if v.component == "workers"}
    assert len(staying) == 1
    for worker_log in logs:
        text = worker_log.read_text(errors="replace")
        assert "WorkerLostError" not in text, worker_log.name
        if worker_log.stem not in staying:
            assert "worker: Warm shutdown" in text, worker_log.name
        for line in text.splitlines():
            if "SIGKILL" in line or "signal 9" in line:
                log(f"{worker_log.name}: {line[:300]}")


def _first_time_load_reached(prometheus: PrometheusServer, workers: int, since: float) -> float:
    """Unix time of the first sample where queued + running needed `workers` workers."""
    import json
    import urllib.parse
    import urllib.request

    end = time.time()
    start = end - (time.monotonic() - since) - 5
    expr = (
        f'max(airflow_executor_queued_tasks{{deployment="{DEPLOYMENT}"}}) + '
        f'max(airflow_executor_running_tasks{{deployment="{DEPLOYMENT}"}})'
    )
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 1})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query_range?{query}") as response:
        result = json.load(response)["data"]["result"]
    for timestamp, value in result[0]["values"] if result else []:
        if math.ceil(float(value) / SLOTS) >= workers:
            return float(timestamp)
    raise AssertionError(f"Prometheus never saw load for {workers} workers")


def _view() -> Any:
    from app.deployments.spec import Executor
    from app.deployments.validation import merge_components
    from app.provisioning.targets import DeploymentView

    components, _ = merge_components(Executor.CELERY, {}, None)
    return DeploymentView(
        name=DEPLOYMENT, workspace=WORKSPACE, executor=Executor.CELERY.value,
        airflow_version="3.3.2", components=components, generation=1,
    )  # fmt: skip
