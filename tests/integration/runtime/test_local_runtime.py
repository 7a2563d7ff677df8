"""The local runtime with real Airflow 3 deployments (PostgreSQL, PgBouncer, Redis, Celery).

- two deployments side by side; Sextant "restarts" (a new runtime on the same state dir) and
  adopts every running process; deleting one removes its processes, database and folder and
  nothing of the other;
- a component that keeps crashing is restarted with backoff and reported as crash-looping with
  its reason (the deployment is degraded), and recovers once its configuration is fixed;
- workers scale up, and down with a warm shutdown: the worker that leaves finishes the task it
  is running (the task succeeds) before it exits.

Each test starts real Airflow processes: about a minute each.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.deployments.schemas import DeploymentStatus
from app.deployments.spec import Component, Executor
from app.deployments.validation import merge_components
from app.integrations.airflow import AirflowApi, flower_active_tasks, flower_inspected_tasks
from app.integrations.probes import http_ready
from app.provisioning.health import decide
from app.provisioning.targets import DeploymentView
from app.runtime.base import ComponentState, ScaleRequest
from app.runtime.local import LocalRuntime, database_name
from tests.integration.runtime._local import (
    E2E_DAG,
    E2E_DAG_ID,
    SLOW_DAG,
    SLOW_DAG_ID,
    local_settings,
    pids_alive,
    require_local_runtime,
    state_dir,
    unit_pids,
    until,
)

pytestmark = pytest.mark.timeout(400)
__all__ = ["state_dir"]  # a fixture, imported for this module


def view(
    name: str, workers: int = 1, executor: Executor = Executor.CELERY, generation: int = 1
) -> DeploymentView:
    components, _ = merge_components(executor, {}, None)
    if executor is Executor.CELERY:
        components[Component.WORKERS.value]["replicas"] = workers
    return DeploymentView(
        name=name, workspace="ws", executor=executor.value, airflow_version="3.3.2",
        components=components, generation=generation, extra={"worker_concurrency": 2},
    )  # fmt: skip


@pytest.fixture
async def runtime(state_dir: Path) -> AsyncIterator[LocalRuntime]:
    settings = local_settings(state_dir)
    require_local_runtime(settings)
    settings = settings.model_copy(update={"worker_grace": 120.0})
    runtime = LocalRuntime(settings)
    await runtime.start()
    yield runtime
    await runtime.shutdown()


async def up(runtime: LocalRuntime, deployment: DeploymentView, timeout: float = 150) -> None:
    """Apply and wait until every component runs."""
    await runtime.apply(deployment, runtime.render(deployment))

    async def running() -> bool:
        return (await runtime.status(deployment)).all_running

    await until(
        running, timeout, f"{deployment.name} to run",
        lambda: "\n".join(runtime.progress(deployment.name))
        + "\n" + runtime.failure_report(deployment.name),
    )  # fmt: skip


async def test_two_deployments_survive_a_sextant_restart_and_deleting_one_spares_the_other(
    runtime: LocalRuntime, state_dir: Path
) -> None:
    first, second = view("alpha"), view("beta")
    await asyncio.gather(up(runtime, first), up(runtime, second))
    ports = {d: runtime.ports(d) for d in ("alpha", "beta")}
    assert ports["alpha"]
    assert ports["beta"]
    assert not set(ports["alpha"].values()) & set(ports["beta"].values())
    pids = {d: sorted(unit_pids(runtime, d)) for d in ("alpha", "beta")}
    postgres_pid = [v.pid for v in runtime.supervisor.views("_postgres")]

    # Sextant stops (its processes do not) and a new one takes over the same state dir.
    await runtime.aclose()
    again = LocalRuntime(runtime.settings)
    await again.start()
    try:
        assert sorted(unit_pids(again, "alpha")) == pids["alpha"]
        assert sorted(unit_pids(again, "beta")) == pids["beta"]
        assert [v.pid for v in again.supervisor.views("_postgres")] == postgres_pid

        async def adopted_and_ready() -> bool:
            statuses = [await again.status(d) for d in (first, second)]
            return all(s.all_running for s in statuses)

        await until(
            adopted_and_ready, 30, "the adopted processes to be ready again",
            lambda: "\n".join(again.progress("alpha") + again.progress("beta")),
        )  # fmt: skip

        await again.remove(first)
        assert pids_alive(pids["alpha"]) == []
        assert not (state_dir / "alpha").exists()
        postgres = again._postgres()
        names = postgres.psql("SELECT string_agg(datname, ',') FROM pg_database")
        assert database_name("alpha") not in names.split(",")
        assert database_name("beta") in names.split(",")
        # The other deployment did not notice.
        assert pids_alive(pids["beta"]) == pids["beta"]
        assert (await again.status(second)).all_running
        beta_api = again.api_url("beta")
        assert beta_api is not None
        assert await http_ready(beta_api, "/api/v2/monitor/health") is None
    finally:
        await again.shutdown()
        runtime.supervisor.units.clear()


async def test_a_component_that_keeps_crashing_is_reported_then_recovers(
    runtime: LocalRuntime, state_dir: Path
) -> None:
    deployment = view("gamma")
    await up(runtime, deployment)
    conf = state_dir / "gamma" / "redis" / "redis.conf"
    good = conf.read_text()
    conf.write_text(good + "no-such-directive yes\n")
    redis = runtime.supervisor.unit("gamma", "redis")
    assert redis is not None
    assert redis.pid is not None
    os.kill(redis.pid, 9)

    async def crashlooping() -> bool:
        status = await runtime.status(deployment)
        return any(
            c.component == "redis" and c.state is ComponentState.CRASHLOOP
            for c in status.components
        )

    await until(crashlooping, 30, "redis to be reported as crash-looping")
    status = await runtime.status(deployment)
    reason = next(c.reason for c in status.components if c.component == "redis")
    assert "exited with status 1" in reason
    assert "no-such-directive" in reason or "Bad directive" in reason, reason
    verdict = decide(DeploymentStatus.HEALTHY, status, heartbeat=True)
    assert verdict.status is DeploymentStatus.DEGRADED
    assert verdict.reason.startswith("redis: crashloop (redis: exited with status 1")

    # Re-applying writes the right configuration back; the next restart succeeds.
    await runtime.apply(deployment, runtime.render(deployment))
    assert conf.read_text() == good

    async def recovered() -> bool:
        return (await runtime.status(deployment)).all_running

    await until(recovered, 60, "redis to recover", lambda: "\n".join(runtime.progress("gamma")))


async def test_workers_scale_up_and_down_without_killing_a_running_task(
    runtime: LocalRuntime,
) -> None:
    deployment = view("delta")
    runtime.dags_folder("delta").mkdir(parents=True)
    (runtime.dags_folder("delta") / f"{SLOW_DAG_ID}.py").write_text(SLOW_DAG)
    await up(runtime, deployment)

    applied = await runtime.scale(deployment, ScaleRequest(Component.WORKERS.value, 2))
    assert applied.writes == 1

    async def two_workers() -> bool:
        status = await runtime.status(deployment)
        workers = next(c for c in status.components if c.component == "workers")
        return workers.ready == 2 and len(await runtime.worker_load(deployment)) == 2

    await until(two_workers, 90, "two workers", lambda: "\n".join(runtime.progress("delta")))

    api_url = runtime.api_url("delta")
    assert api_url is not None
    api = AirflowApi(api_url)

    async def parsed() -> bool:
        return await api.dag_exists(SLOW_DAG_ID)

    await until(parsed, 90, "the slow DAG to be parsed")
    await api.unpause(SLOW_DAG_ID)
    run_id = await api.trigger(SLOW_DAG_ID)
    busy: list[str] = []
    seen: dict[str, object] = {}

    async def running_somewhere() -> bool:
        loads = await runtime.worker_load(deployment)
        seen["loads"] = [(w.worker, w.running_tasks) for w in loads]
        seen["run"] = await api.run_state(SLOW_DAG_ID, run_id)
        busy[:] = [w.worker for w in loads if w.running_tasks > 0]
        return bool(busy)

    # The runtime itself must name the busy worker: from Flower's events or, when Flower has
    # missed them (seen in full-suite runs), from the worker's own answer to an inspection.
    await until(running_somewhere, 120, "the slow task to run on a worker", lambda: str(seen))
    print(f"busy worker: {busy} (loads: {seen['loads']})")
    victim = busy[0]
    # The inspection alone (the fallback when Flower missed the events) sees the task too.
    flower = runtime.flower_url("delta")
    assert flower is not None
    full_name = next(n for n in await flower_active_tasks(flower) if n.startswith(f"{victim}@"))
    assert await flower_inspected_tasks(flower, full_name) == 1
    victim_unit = runtime.supervisor.unit("delta", victim)
    assert victim_unit is not None
    assert victim_unit.pid is not None
    victim_pid = victim_unit.pid
    # Scale down, naming the busy worker: it must finish its task before it goes.
    started = time.monotonic()
    await runtime.scale(deployment, ScaleRequest(Component.WORKERS.value, 1, victims=[victim]))
    status = await runtime.status(deployment)
    workers = next(c for c in status.components if c.component == "workers")
    assert workers.desired == 1
    assert "leaving (warm shutdown)" in workers.reason
    assert pids_alive([victim_pid]) == [victim_pid]

    state = {"value": ""}

    async def finished() -> bool:
        state["value"] = await api.run_state(SLOW_DAG_ID, run_id)
        return state["value"] in ("success", "failed")

    await until(finished, 90, "the slow DAG run to finish", lambda: state["value"])
    assert state["value"] == "success"

    async def victim_gone() -> bool:
        # Gone means the process has exited and the supervisor has cleaned up after it (its
        # pool children reaped, the unit forgotten); the second lags the first by up to 3 s.
        return pids_alive([victim_pid]) == [] and runtime.supervisor.unit("delta", victim) is None

    await until(victim_gone, 30, "the leaving worker to exit after its task")
    # It left through Celery's warm shutdown, not by being killed after the grace period.
    assert time.monotonic() - started < runtime.settings.worker_grace
    log = (runtime.logs_dir("delta") / f"{victim}.log").read_text()
    assert "worker: Warm shutdown" in log, log[-2000:]
    assert "WorkerLostError" not in log
    remaining = [v.name for v in runtime.supervisor.views("delta") if v.component == "workers"]
    assert remaining == [w for w in ("workers-1", "workers-2") if w != victim]


async def test_switching_to_local_executor_drops_broker_workers_and_flower_and_runs_tasks(
    runtime: LocalRuntime,
) -> None:
    celery = view("epsilon")
    runtime.dags_folder("epsilon").mkdir(parents=True)
    (runtime.dags_folder("epsilon") / f"{E2E_DAG_ID}.py").write_text(E2E_DAG)
    await up(runtime, celery)
    celery_only = {"redis", "workers", "flower"}
    dropped = [
        v.pid
        for v in runtime.supervisor.views("epsilon")
        if v.component in celery_only and v.pid is not None
    ]
    assert len(dropped) == 3

    local = view("epsilon", executor=Executor.LOCAL, generation=2)
    await up(runtime, local)
    assert pids_alive(dropped) == []
    left = {v.component for v in runtime.supervisor.views("epsilon")}
    assert not left & celery_only
    status = await runtime.status(local)
    assert not {c.component for c in status.components} & celery_only

    # The scheduler now runs the task itself (LocalExecutor), to success.
    api_url = runtime.api_url("epsilon")
    assert api_url is not None
    api = AirflowApi(api_url)

    async def parsed() -> bool:
        return await api.dag_exists(E2E_DAG_ID)

    await until(parsed, 90, f"the dag-processor to parse {E2E_DAG_ID}")
    await api.unpause(E2E_DAG_ID)
    run_id = await api.trigger(E2E_DAG_ID)
    state = {"value": ""}

    async def finished() -> bool:
        state["value"] = await api.run_state(E2E_DAG_ID, run_id)
        return state["value"] in ("success", "failed")

    await until(finished, 90, f"DAG run {run_id} to finish", lambda: state["value"])
    assert state["value"] == "success"
    scheduler_log = (runtime.logs_dir("epsilon") / "scheduler.log").read_text()
    assert "LocalExecutor" in scheduler_log
