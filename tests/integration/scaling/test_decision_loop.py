"""The decision round against a real Prometheus fed by a real statsd_exporter (the repo's mapping),
on both databases.

Airflow's executor gauges go in as StatsD lines, exactly as a scheduler sends them; Prometheus
scrapes the exporters with the `deployment` and `workspace` labels Sextant provisions. The runtime
is a recorder (the real runtimes' scale paths are tested against the kube-apiserver and a real
Airflow elsewhere): here the subject is the round — one query, decisions, records, metrics.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.alerting.dependencies import METRIC_SOURCE
from app.alerting.measure import MetricSource
from app.core.clock import FrozenClock
from app.core.settings import PrometheusSettings, Settings
from app.integrations.errors import TransientError
from app.integrations.prometheus import RangeSeries, Sample
from app.jobs.scheduler import scale_workers
from app.main import create_app
from app.provisioning.targets import Applied, Artifact, DeploymentView
from app.runtime.base import ScaleRequest, WorkerLoad
from app.scaling.service import RoundReport, ScalingService
from tests.conftest import _empty_tables
from tests.factories import create_deployment, create_workspace
from tests.harness.components import PrometheusServer, StatsdExporter
from tests.integration.alerting._sextant import wait_until
from tests.integration.scaling._support import (
    flower_reports,
    load,
    until_flower_seen,
    until_seen,
)


@dataclass
class RecordingRuntime:
    """A runtime that records scale requests and reports the worker loads it is given."""

    name: str = "runtime"
    loads: list[WorkerLoad] = field(default_factory=list)
    scaled: list[tuple[str, ScaleRequest]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        return ()

    def configured(self) -> bool:
        return True

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        return Applied(0)

    async def remove(self, deployment: DeploymentView) -> Applied:
        return Applied(0)

    async def scale(self, deployment: DeploymentView, request: ScaleRequest) -> Applied:
        if deployment.name in self.failing:
            raise TransientError("runtime", f"{deployment.name} cannot be scaled now")
        self.scaled.append((deployment.name, request))
        return Applied(1, f"workers -> {request.replicas}")

    async def worker_load(self, deployment: DeploymentView) -> Sequence[WorkerLoad]:
        return list(self.loads)


class CountingSource:
    """The real Prometheus source, counting the queries it is asked."""

    def __init__(self, inner: MetricSource) -> None:
        self.inner = inner
        self.queries: list[str] = []

    async def instant(self, expr: str) -> Sequence[Sample]:
        self.queries.append(expr)
        return await self.inner.instant(expr)

    async def range(
        self, expr: str, start: float, end: float, step: float
    ) -> Sequence[RangeSeries]:
        return await self.inner.range(expr, start, end, step)


@pytest.fixture
def runtime() -> RecordingRuntime:
    return RecordingRuntime()


@pytest.fixture
async def app(
    settings: Settings,
    clock: FrozenClock,
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
) -> AsyncIterator[FastAPI]:
    await _empty_tables(settings.database.url)
    configured = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"enabled": False}),
            "prometheus": PrometheusSettings(url=prometheus.url),
        }
    )
    application = create_app(configured, clock, targets=[runtime])  # type: ignore[list-item]
    async with application.router.lifespan_context(application):
        context = application.state.context
        context.extras[METRIC_SOURCE] = CountingSource(context.extras[METRIC_SOURCE])
        yield application


@pytest.fixture
async def fleet(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_workspace(client, admin, "data-eng")
    for name in ("etl", "bi"):
        await create_deployment(
            client, admin, "data-eng", name, min_workers=1, max_workers=10, worker_concurrency=4,
            components={"workers": {"replicas": 3 if name == "bi" else 1}},
        )  # fmt: skip
        policy = {"enabled": True, "scale_up_limit": 10, "scale_down_window_seconds": 0}
        response = await client.put(
            f"/api/v1/deployments/{name}/scaling-policy", json=policy, headers=admin
        )
        assert response.status_code == 200, response.text


async def decisions(client: httpx.AsyncClient, admin: dict[str, str], name: str) -> list[Any]:
    response = await client.get(f"/api/v1/deployments/{name}/scaling-decisions", headers=admin)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def workers_of(client: httpx.AsyncClient, admin: dict[str, str], name: str) -> int:
    body = (await client.get(f"/api/v1/deployments/{name}", headers=admin)).json()
    return int(body["components"]["workers"]["replicas"])


def metric(text: str, name: str, deployment: str, extra: str = "") -> float | None:
    pattern = rf'^{name}\{{deployment="{deployment}",{extra}workspace="data-eng"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.usefixtures("fleet")
async def test_a_burst_scales_up_in_one_round_with_one_query_for_the_fleet(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
) -> None:
    load(exporters["etl"], 38, 2)
    await until_seen(prometheus, "etl", 38, 2)

    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]

    source = app.state.context.extras[METRIC_SOURCE]
    assert len(source.queries) == 1
    assert [(name, r.replicas) for name, r in runtime.scaled] == [("etl", 10)]
    [decision] = await decisions(client, admin, "etl")
    assert decision["queued"] == 38
    assert decision["running"] == 2
    assert (decision["current"], decision["recommended"], decision["desired"]) == (1, 10, 10)
    assert (decision["reason"], decision["applied"]) == ("scale_up", True)
    assert await workers_of(client, admin, "etl") == 10
    # bi's exporter has no executor gauges at all: missing data, nothing changes.
    [held] = await decisions(client, admin, "bi")
    assert (held["reason"], held["desired"], held["applied"]) == ("no_data", 3, False)
    assert await workers_of(client, admin, "bi") == 3

    text = (await client.get("/metrics")).text
    assert metric(text, "sextant_scaling_current_workers", "etl") == 10
    assert metric(text, "sextant_scaling_desired_workers", "etl") == 10
    assert metric(text, "sextant_scaling_max_workers", "etl") == 10
    assert metric(text, "sextant_scaling_current_workers", "bi") == 3
    assert metric(text, "sextant_scaling_decisions_total", "etl", 'reason="scale_up",') is not None


@pytest.mark.usefixtures("fleet")
async def test_steady_rounds_are_counted_but_stored_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
    clock: FrozenClock,
) -> None:
    load(exporters["etl"], 0, 3)
    await until_seen(prometheus, "etl", 0, 3)
    for _ in range(3):
        await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
        clock.advance(10)
    stored = await decisions(client, admin, "etl")
    assert [d["reason"] for d in stored] == ["steady"]
    assert runtime.scaled == []


@pytest.mark.usefixtures("fleet")
async def test_policy_and_bound_changes_apply_from_the_next_round(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
    clock: FrozenClock,
) -> None:
    """The loop keeps its plans between rounds; a change through the API is read at once."""
    load(exporters["etl"], 38, 2)
    await until_seen(prometheus, "etl", 38, 2)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert await workers_of(client, admin, "etl") == 10

    # The policy's own bound: down to 6 in the next round (window 0).
    policy = {"enabled": True, "max_workers": 6, "scale_down_window_seconds": 0}
    response = await client.put(
        "/api/v1/deployments/etl/scaling-policy", json=policy, headers=admin
    )
    assert response.status_code == 200, response.text
    clock.advance(10)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert runtime.scaled[-1][1].replicas == 6
    assert await workers_of(client, admin, "etl") == 6

    # The deployment's Celery concurrency (the policy's default tasks per worker) doubles:
    # 40 tasks / 8 = 5 workers, next round.
    response = await client.patch(
        "/api/v1/deployments/etl", json={"worker_concurrency": 8}, headers=admin
    )
    assert response.status_code == 200, response.text
    clock.advance(10)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert runtime.scaled[-1][1].replicas == 5

    # Disabled: no more decisions for it.
    response = await client.put(
        "/api/v1/deployments/etl/scaling-policy", json={"enabled": False}, headers=admin
    )
    assert response.status_code == 200, response.text
    before = len(await decisions(client, admin, "etl"))
    scaled = len(runtime.scaled)
    clock.advance(10)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert len(await decisions(client, admin, "etl")) == before
    assert len(runtime.scaled) == scaled


@pytest.mark.usefixtures("fleet")
async def test_only_the_lease_holder_decides_and_a_lost_lease_drops_the_round(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
    clock: FrozenClock,
) -> None:
    """A replica that did not lead asks for the lease before anything else; the leader renews
    it while reading, and drops the round if it was lost meanwhile."""
    load(exporters["etl"], 38, 2)
    await until_seen(prometheus, "etl", 38, 2)
    context = app.state.context
    source, settings = context.extras[METRIC_SOURCE], context.settings.scaling
    held = True

    async def lease() -> bool:
        return held

    async def round_of(service: ScalingService) -> RoundReport | None:
        return await service.run_round(
            context.sessionmaker, source, [runtime], clock.now(), settings, lease
        )

    held = False
    assert await round_of(ScalingService()) is None
    assert source.queries == []  # another replica leads: no query

    leader = ScalingService()
    held = True
    report = await round_of(leader)
    assert report is not None
    assert report.applied == 1
    assert [(name, r.replicas) for name, r in runtime.scaled] == [("etl", 10)]
    stored = len(await decisions(client, admin, "etl"))

    # The lease is lost while the leader reads: its reading is dropped, nothing is stored.
    clock.advance(10)
    held = False
    assert await round_of(leader) is None
    assert len(source.queries) == 2  # it had asked, alongside the renewal
    assert len(await decisions(client, admin, "etl")) == stored
    assert len(runtime.scaled) == 1

    # Back with the lease, it asks for it first and decides again (a steady round).
    clock.advance(10)
    held = True
    assert await round_of(leader) is not None
    newest, *_ = await decisions(client, admin, "etl")
    assert newest["reason"] == "steady"


async def test_without_any_policy_prometheus_is_not_asked_until_one_appears(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: RecordingRuntime,
    clock: FrozenClock,
) -> None:
    source = app.state.context.extras[METRIC_SOURCE]
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    source.queries.clear()
    for _ in range(3):
        clock.advance(10)
        await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert source.queries == []
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", "etl", worker_concurrency=4)
    response = await client.put(
        "/api/v1/deployments/etl/scaling-policy", json={"enabled": True}, headers=admin
    )
    assert response.status_code == 200, response.text
    clock.advance(10)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert len(source.queries) == 1
    [decision] = await decisions(client, admin, "etl")
    assert decision["reason"] == "no_data"  # etl's exporter sends nothing


@pytest.mark.usefixtures("fleet")
async def test_scale_down_names_the_idle_workers_and_never_happens_on_missing_data(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
    clock: FrozenClock,
) -> None:
    runtime.loads = [
        WorkerLoad("worker-1", 1), WorkerLoad("worker-2", 0), WorkerLoad("worker-3", 1),
    ]  # fmt: skip
    # 12 tasks on 3 workers of 4 slots: steady.
    load(exporters["bi"], 12, 0)
    await until_seen(prometheus, "bi", 12, 0)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert (await decisions(client, admin, "bi"))[0]["reason"] == "steady"
    # The exporter stops: Prometheus marks bi's series stale, so no load is known.
    exporters["bi"].stop()
    await asyncio.to_thread(
        wait_until,
        lambda: not prometheus.query('airflow_executor_running_tasks{deployment="bi"}'), 30,
        "bi's load series went stale",
    )  # fmt: skip
    clock.advance(10)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    assert runtime.scaled == []
    assert (await decisions(client, admin, "bi"))[0]["reason"] == "no_data"

    exporters["bi"].start()
    load(exporters["bi"], 0, 2)
    await until_seen(prometheus, "bi", 0, 2)
    clock.advance(10)
    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]

    [(name, request)] = runtime.scaled
    assert (name, request.replicas) == ("bi", 1)
    # Two leave: the idle one first, then the newest of the equally busy.
    assert list(request.victims) == ["worker-2", "worker-3"]
    latest = (await decisions(client, admin, "bi"))[0]
    assert (latest["reason"], latest["desired"], latest["applied"]) == ("scale_down", 1, True)
    assert "worker-2 (0 running)" in latest["detail"]


async def test_one_query_reads_who_is_busy_for_every_deployment_scaling_down(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    flowers: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
) -> None:
    await create_workspace(client, admin, "data-eng")
    for name in ("etl", "bi"):
        await create_deployment(
            client, admin, "data-eng", name, min_workers=1, max_workers=10, worker_concurrency=4,
            components={"workers": {"replicas": 3}},
        )  # fmt: skip
        policy = {"enabled": True, "scale_down_window_seconds": 0}
        response = await client.put(
            f"/api/v1/deployments/{name}/scaling-policy", json=policy, headers=admin
        )
        assert response.status_code == 200, response.text
    # etl's Flower reports its workers (the local runtime's node names); bi's reports none, so
    # bi's runtime is asked. The runtime's answer differs from Flower's for etl on purpose.
    runtime.loads = [
        WorkerLoad("workers-1", 1), WorkerLoad("workers-2", 0), WorkerLoad("workers-3", 1),
    ]  # fmt: skip
    flower_reports(flowers["etl"], "workers-1@etl", 0)
    flower_reports(flowers["etl"], "workers-2@etl", 2)
    flower_reports(flowers["etl"], "workers-3@etl", 1)
    load(exporters["etl"], 3, 3)  # 2 workers
    load(exporters["bi"], 0, 2)  # 1 worker
    await until_seen(prometheus, "etl", 3, 3)
    await until_seen(prometheus, "bi", 0, 2)
    await until_flower_seen(prometheus, "etl", 3)

    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]

    source = app.state.context.extras[METRIC_SOURCE]
    assert len(source.queries) == 2  # the fleet's load, then who is busy for both at once
    assert 'deployment=~"bi|etl"' in source.queries[1]
    requests = dict(runtime.scaled)
    assert (requests["etl"].replicas, list(requests["etl"].victims)) == (2, ["workers-1"])
    assert list(requests["etl"].loads) == [
        WorkerLoad("workers-1", 0), WorkerLoad("workers-2", 2), WorkerLoad("workers-3", 1),
    ]  # fmt: skip
    assert (requests["bi"].replicas, list(requests["bi"].loads)) == (1, runtime.loads)
    assert list(requests["bi"].victims) == ["workers-2", "workers-3"]
    [decision] = await decisions(client, admin, "etl")
    assert "leaving: workers-1 (0 running)" in decision["detail"]


@pytest.mark.usefixtures("fleet")
async def test_prometheus_down_changes_nothing_and_says_why(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
) -> None:
    load(exporters["etl"], 0, 0)
    await until_seen(prometheus, "etl", 0, 0)
    prometheus.stop()
    try:
        await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]
    finally:
        prometheus.start()
    assert runtime.scaled == []
    for name in ("etl", "bi"):
        [decision] = await decisions(client, admin, name)
        assert decision["reason"] == "metrics_unavailable"
        assert "prometheus" in decision["detail"].lower()


@pytest.mark.usefixtures("fleet")
async def test_simulation_replays_the_real_load_through_both_policies(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    clock: FrozenClock,
) -> None:
    load(exporters["etl"], 30, 10)
    await until_seen(prometheus, "etl", 30, 10)
    await asyncio.sleep(3)
    load(exporters["etl"], 0, 0)
    await until_seen(prometheus, "etl", 0, 0)
    await asyncio.sleep(2)
    # The app's clock is frozen in the past; the simulation reads up to "now".
    clock.advance((datetime.now(UTC) - clock.now()).total_seconds())
    body = {
        "policy": {"max_workers": 4, "tasks_per_worker": 4, "scale_down_window_seconds": 0},
        "hours": 0.01,
        "step_seconds": 1,
    }
    response = await client.post(
        "/api/v1/deployments/etl/scaling-policy/simulate", json=body, headers=admin
    )
    assert response.status_code == 200, response.text
    result = response.json()
    proposed, current = result["proposed"], result["current"]
    assert proposed["peak_workers"] == 4
    assert current["peak_workers"] == 10
    # Capped at 4 workers x 4 slots = 16 < 40: tasks waited while the burst lasted.
    assert proposed["longest_wait_seconds"] >= 3
    assert current["longest_wait_seconds"] == 0
    assert proposed["replica_changes"] >= 2
    assert current["worker_minutes"] > proposed["worker_minutes"]
    assert [e["workers"] for e in proposed["timeline"] if e["reason"] == "scale_up"] == [4]


async def test_bad_simulation_step_is_422_naming_it(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", "etl")
    response = await client.post(
        "/api/v1/deployments/etl/scaling-policy/simulate",
        json={"hours": 336, "step_seconds": 1},
        headers=admin,
    )
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["step_seconds"]


@pytest.mark.usefixtures("fleet")
async def test_a_runtime_failure_is_recorded_and_the_others_still_scale(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
    runtime: RecordingRuntime,
) -> None:
    runtime.failing = {"bi"}
    load(exporters["etl"], 16, 0)
    load(exporters["bi"], 40, 0)
    await until_seen(prometheus, "etl", 16, 0)
    await until_seen(prometheus, "bi", 40, 0)

    await scale_workers(app.state.context, [runtime])  # type: ignore[list-item]

    assert [(name, r.replicas) for name, r in runtime.scaled] == [("etl", 4)]
    [failed] = await decisions(client, admin, "bi")
    assert (failed["reason"], failed["desired"], failed["applied"]) == ("apply_failed", 10, False)
    assert "bi cannot be scaled now" in failed["detail"]
    assert await workers_of(client, admin, "bi") == 3
