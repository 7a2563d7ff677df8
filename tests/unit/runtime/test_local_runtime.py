"""Pure parts of the local runtime: the rendered plan, component status and deployment health."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.settings import LocalSettings
from app.deployments.schemas import DeploymentStatus
from app.deployments.spec import Executor
from app.deployments.validation import merge_components
from app.provisioning.health import decide
from app.provisioning.targets import DeploymentView
from app.runtime.base import ComponentState, ComponentStatus, RuntimeStatus, ScaleRequest
from app.runtime.local import LocalRuntime, _aggregate, database_name, plan
from app.runtime.local_supervisor import UnitState, UnitView
from app.runtime.local_tools import Tools


def view(name: str = "etl-prod", workers: int = 2) -> DeploymentView:
    components, _ = merge_components(Executor.CELERY, {}, None)
    components["workers"]["replicas"] = workers
    return DeploymentView(
        name=name, workspace="data-eng", executor="CeleryExecutor", airflow_version="3.3.2",
        components=components, generation=3, extra={"worker_concurrency": 8},
    )  # fmt: skip


def test_render_is_pure_and_holds_no_ports_or_secrets(tmp_path: Path) -> None:
    runtime = LocalRuntime(LocalSettings(state_dir=tmp_path))
    first = runtime.render(view())
    assert runtime.render(view()) == first
    assert list(tmp_path.iterdir()) == []  # rendering touched nothing
    [artifact] = first
    assert artifact.path == "runtime/local/etl-prod.json"
    plan = json.loads(artifact.content)
    assert plan["replicas"]["workers"] == 2
    assert plan["worker_concurrency"] == 8
    assert "port" not in artifact.content
    assert "password" not in artifact.content
    assert runtime.render(view(workers=3)) != first


def test_ports_are_allocated_once_distinct_and_on_loopback(tmp_path: Path) -> None:
    runtime = LocalRuntime(LocalSettings(state_dir=tmp_path))
    address = runtime.metrics_address("etl-prod")
    assert address is not None
    assert address.startswith("127.0.0.1:")
    assert runtime.metrics_address("etl-prod") == address
    first = runtime.ports("etl-prod")
    runtime.metrics_address("etl-dev")
    second = runtime.ports("etl-dev")
    assert first
    assert second
    assert len(set(first.values())) == len(first)
    assert not set(first.values()) & set(second.values())


def test_database_names_are_safe_identifiers() -> None:
    assert database_name("etl-prod-2") == "airflow_etl_prod_2"


def unit(name: str, state: UnitState, reason: str = "") -> UnitView:
    return UnitView("d", name, "workers", state, 1, reason, 0, 1.0, False)


@pytest.mark.parametrize(
    ("desired", "units", "expected", "ready"),
    [
        (2, [unit("workers-1", UnitState.RUNNING), unit("workers-2", UnitState.RUNNING)],
         ComponentState.RUNNING, 2),
        (2, [unit("workers-1", UnitState.RUNNING), unit("workers-2", UnitState.STARTING, "w")],
         ComponentState.STARTING, 1),
        (1, [unit("workers-1", UnitState.CRASHLOOP, "exited with status 1")],
         ComponentState.CRASHLOOP, 0),
        (1, [unit("workers-1", UnitState.RUNNING), unit("workers-2", UnitState.STOPPING)],
         ComponentState.RUNNING, 1),
        (1, [], ComponentState.STOPPED, 0),
    ],
)  # fmt: skip
def test_component_status_from_its_processes(
    desired: int, units: list[UnitView], expected: ComponentState, ready: int
) -> None:
    status = _aggregate("workers", desired, units)
    assert (status.state, status.ready, status.desired) == (expected, ready, desired)


def test_a_leaving_worker_is_named_in_the_reason() -> None:
    status = _aggregate(
        "workers", 1, [unit("workers-1", UnitState.RUNNING), unit("workers-2", UnitState.STOPPING)]
    )
    assert status.reason == "1 leaving (warm shutdown)"


def test_a_crashloop_reason_names_the_process() -> None:
    status = _aggregate("workers", 1, [unit("workers-1", UnitState.CRASHLOOP, "exited with 1")])
    assert status.reason == "workers-1: exited with 1"


UP = RuntimeStatus((ComponentStatus("scheduler", 1, 1, ComponentState.RUNNING),))
STARTING = RuntimeStatus(
    (ComponentStatus("api_server", 1, 0, ComponentState.STARTING, "waiting for it"),)
)
CRASHING = RuntimeStatus(
    (ComponentStatus("scheduler", 1, 0, ComponentState.CRASHLOOP, "exited with status 1"),)
)
P, H, D = DeploymentStatus.PROVISIONING, DeploymentStatus.HEALTHY, DeploymentStatus.DEGRADED


@pytest.mark.parametrize(
    ("current", "runtime", "heartbeat", "status", "words"),
    [
        (P, UP, True, H, "scheduler heartbeat seen"),
        (P, UP, False, P, "waiting for the scheduler heartbeat"),
        (H, UP, False, D, "no scheduler heartbeat in Prometheus"),
        (P, STARTING, True, P, "starting: api_server"),
        (H, STARTING, True, D, "api_server: starting"),
        (P, CRASHING, True, D, "scheduler: crashloop (exited with status 1)"),
        (H, CRASHING, False, D, "crashloop"),
        (P, None, True, H, "scheduler heartbeat seen"),
        (P, UP, None, P, "no Prometheus configured"),
        (H, UP, None, D, "no Prometheus configured"),
    ],
)
def test_health_needs_components_up_and_the_heartbeat(
    current: DeploymentStatus,
    runtime: RuntimeStatus | None,
    heartbeat: bool | None,
    status: DeploymentStatus,
    words: str,
) -> None:
    verdict = decide(current, runtime, heartbeat)
    assert verdict.status is status
    assert words in verdict.reason


async def test_applying_without_airflow_installed_says_what_to_run(tmp_path: Path) -> None:
    from app.integrations.errors import PermanentError

    settings = LocalSettings(state_dir=tmp_path / "state", tools_dir=tmp_path / "tools")
    runtime = LocalRuntime(settings)
    try:
        with pytest.raises(PermanentError, match="run `sextant local setup`"):
            await runtime.apply(view(), runtime.render(view()))
    finally:
        await runtime.aclose()
    assert not (tmp_path / "state" / "etl-prod" / "runtime.json").exists()


def _local_executor_view() -> DeploymentView:
    components, _ = merge_components(Executor.LOCAL, {}, None)
    return DeploymentView(
        name="etl", workspace="w", executor="LocalExecutor", airflow_version="3.3.2",
        components=components, generation=1,
    )  # fmt: skip


def _tools(root: Path) -> Tools:
    names = ("airflow", "python", "postgres", "initdb", "psql", "pgbouncer", "redis-server")
    paths = {name.replace("-", "_"): root / "bin" / name for name in names}
    return Tools(**paths, statsd_exporter=root / "bin" / "statsd_exporter")


def test_a_local_executor_deployment_runs_no_broker_workers_or_flower(tmp_path: Path) -> None:
    runtime = LocalRuntime(LocalSettings(state_dir=tmp_path))
    local = _local_executor_view()
    desired = plan(local)
    assert desired["executor"] == "LocalExecutor"
    specs = runtime._specs(local.name, desired, _tools(tmp_path))
    components = {spec.component for spec in specs}
    assert components == {
        "pgbouncer", "statsd", "migrate", "api_server", "scheduler", "dag_processor", "triggerer"
    }  # fmt: skip
    scheduler = next(spec for spec in specs if spec.component == "scheduler")
    assert "redis" not in scheduler.after
    assert scheduler.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # The same deployment under Celery has its broker, workers and Flower.
    celery = runtime._specs("etl-c", plan(view("etl-c")), _tools(tmp_path))
    assert {"redis", "workers", "flower"} <= {spec.component for spec in celery}


async def test_scaling_the_workers_of_a_local_executor_deployment_is_refused(
    tmp_path: Path,
) -> None:
    from app.integrations.errors import PermanentError

    runtime = LocalRuntime(LocalSettings(state_dir=tmp_path))
    try:
        with pytest.raises(PermanentError, match="LocalExecutor: no workers"):
            await runtime.scale(_local_executor_view(), ScaleRequest("workers", 2))
    finally:
        await runtime.aclose()
