"""Scaling on the real kube-apiserver: deletion costs from running tasks set before replicas go
down, and decision rounds (real Prometheus load) patching the workers' replicas and, scaling
down, marking the pods from Flower's per-worker gauges in Prometheus.

The API server runs without a kubelet or controllers, so the worker pods a ReplicaSet would own
are created by hand, and nothing removes pods: what is checked is what Sextant writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from app.core.clock import FrozenClock
from app.core.settings import PrometheusSettings, Settings
from app.jobs.scheduler import scale_workers
from app.main import create_app
from app.runtime.base import ScaleRequest, WorkerLoad
from app.runtime.kubernetes import KubernetesRuntime
from tests.conftest import _empty_tables
from tests.factories import create_deployment, create_workspace
from tests.harness.components import PrometheusServer, StatsdExporter
from tests.harness.kubernetes import KubeApiServer
from tests.integration.runtime.kube_support import get, settings_for, unique_name, view
from tests.integration.runtime.test_kubernetes_runtime import _deletion_costs, _worker_pod
from tests.integration.scaling._support import (
    flower_reports,
    load,
    until_flower_seen,
    until_seen,
)

COST = "controller.kubernetes.io/pod-deletion-cost"


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> Iterator[httpx.Client]:
    with kube_apiserver.client() as client:
        yield client


@pytest.fixture
async def runtime(kube_apiserver: KubeApiServer) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(
        settings_for(kube_apiserver), elasticsearch_url="http://elasticsearch:9200"
    )
    yield runtime
    await runtime.aclose()


async def test_deletion_costs_follow_running_tasks_and_are_set_before_replicas_drop(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name("s")
    deployment = view(name, components={"workers": {"replicas": 3}})
    await runtime.apply(deployment, runtime.render(deployment))
    for pod in ("workers-a", "workers-b", "workers-c"):
        _worker_pod(kube, name, pod)
    loads = [
        WorkerLoad("celery@workers-a", 3), WorkerLoad("celery@workers-b", 0),
        WorkerLoad("celery@workers-c", 1),
    ]  # fmt: skip

    applied = await runtime.scale(
        deployment, ScaleRequest("workers", 2, victims=["celery@workers-b"], loads=loads)
    )

    assert _deletion_costs(kube, name) == {
        "workers-a": "3",
        "workers-b": "-1000",
        "workers-c": "1",
    }
    assert applied.writes == 4  # three pods annotated, one scale
    workers = get(kube, "Deployment", "workers", f"sextant-{name}")
    assert workers is not None
    assert workers["spec"]["replicas"] == 2
    # etcd revisions order writes: every annotation happened before the replicas went down.
    pods = kube.get(f"/api/v1/namespaces/sextant-{name}/pods").json()["items"]
    annotated = max(int(p["metadata"]["resourceVersion"]) for p in pods)
    assert annotated < int(workers["metadata"]["resourceVersion"])

    # The same costs again write nothing but the scale.
    again = await runtime.scale(
        deployment, ScaleRequest("workers", 1, victims=["celery@workers-b"], loads=loads)
    )
    assert again.writes == 1


@pytest.fixture
async def app(
    settings: Settings,
    clock: FrozenClock,
    prometheus: PrometheusServer,
    runtime: KubernetesRuntime,
) -> AsyncIterator[FastAPI]:
    await _empty_tables(settings.database.url)
    configured = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"enabled": False}),
            "prometheus": PrometheusSettings(url=prometheus.url),
        }
    )
    application = create_app(configured, clock, targets=[runtime])
    async with application.router.lifespan_context(application):
        yield application


async def _workers_set_to(
    runtime: KubernetesRuntime, kube: httpx.Client, name: str, replicas: int
) -> str:
    """The deployment's namespace (applied once: the API server lives for the whole session,
    both databases' runs), with its workers' replicas set to `replicas`."""
    namespace = f"sextant-{name}"
    if get(kube, "Namespace", namespace, None) is None:
        deployment = view(name, components={"workers": {"replicas": replicas}})
        await runtime.apply(deployment, runtime.render(deployment))
    kube.patch(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/workers/scale",
        json={"spec": {"replicas": replicas}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    return namespace


async def test_a_decision_round_patches_the_workers_replicas_on_the_cluster(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: KubernetesRuntime,
    kube: httpx.Client,
    exporters: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
) -> None:
    # The exporters label their load `etl`; the API server lives for the whole session (both
    # databases' runs), so its namespace is applied once and its workers reset to 1.
    await create_workspace(client, admin, "data-eng")
    await create_deployment(
        client, admin, "data-eng", "etl", min_workers=1, max_workers=8, worker_concurrency=4
    )
    response = await client.put(
        "/api/v1/deployments/etl/scaling-policy", json={"enabled": True}, headers=admin
    )
    assert response.status_code == 200, response.text
    namespace = await _workers_set_to(runtime, kube, "etl", 1)
    load(exporters["etl"], 14, 2)
    await until_seen(prometheus, "etl", 14, 2)

    await scale_workers(app.state.context, [runtime])

    workers = get(kube, "Deployment", "workers", namespace)
    assert workers is not None
    assert workers["spec"]["replicas"] == 4  # ceil(16 / 4)
    decisions = (
        await client.get("/api/v1/deployments/etl/scaling-decisions", headers=admin)
    ).json()["items"]
    assert [(d["reason"], d["desired"], d["applied"]) for d in decisions] == [("scale_up", 4, True)]
    assert "workers: 1 -> 4" in decisions[0]["detail"]


async def test_a_scale_down_round_marks_pods_from_flowers_gauges_in_prometheus(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: KubernetesRuntime,
    kube: httpx.Client,
    exporters: dict[str, StatsdExporter],
    flowers: dict[str, StatsdExporter],
    prometheus: PrometheusServer,
) -> None:
    # The runtime itself knows no load on Kubernetes: whatever the pods get comes from Prometheus.
    assert await runtime.worker_load(view("bi")) == ()
    await create_workspace(client, admin, "data-eng")
    await create_deployment(
        client, admin, "data-eng", "bi", min_workers=1, max_workers=8, worker_concurrency=4,
        components={"workers": {"replicas": 3}},
    )  # fmt: skip
    policy = {"enabled": True, "scale_down_window_seconds": 0}
    response = await client.put("/api/v1/deployments/bi/scaling-policy", json=policy, headers=admin)
    assert response.status_code == 200, response.text
    # The API server lives for the whole session (both databases' runs): fresh pods, 3 replicas.
    namespace = await _workers_set_to(runtime, kube, "bi", 3)
    kube.delete(f"/api/v1/namespaces/{namespace}/pods").raise_for_status()
    for pod in ("workers-a", "workers-b", "workers-c"):
        _worker_pod(kube, "bi", pod)
    # 4 queued + 2 running on 4 slots each: 2 workers. workers-a runs both tasks, workers-b is
    # idle, and workers-c said goodbye (its last heartbeat's 0 must not make it look idle).
    flower_reports(flowers["bi"], "celery@workers-a", 2)
    flower_reports(flowers["bi"], "celery@workers-b", 0)
    flower_reports(flowers["bi"], "celery@workers-c", 0, online=False)
    load(exporters["bi"], 4, 2)
    await until_seen(prometheus, "bi", 4, 2)
    await until_flower_seen(prometheus, "bi", 3)

    await scale_workers(app.state.context, [runtime])

    costs = _deletion_costs(kube, "bi")
    assert costs == {"workers-a": "2", "workers-b": "-1000", "workers-c": None}
    workers = get(kube, "Deployment", "workers", namespace)
    assert workers is not None
    assert workers["spec"]["replicas"] == 2
    [decision] = (
        await client.get("/api/v1/deployments/bi/scaling-decisions", headers=admin)
    ).json()["items"]
    assert (decision["reason"], decision["desired"], decision["applied"]) == (
        "scale_down", 2, True,
    )  # fmt: skip
    assert "leaving: workers-b (0 running)" in decision["detail"]
