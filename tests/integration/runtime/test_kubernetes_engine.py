"""The provisioning engine with the Kubernetes runtime as its target, on the real kube-apiserver
and both databases: a refused object fails the run with the server's message, is retried, and
degrades the deployment; deleting a deployment removes its namespace and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.core.clock import FrozenClock
from app.core.settings import Settings
from app.deployments.models import Deployment
from app.jobs.scheduler import reconcile_due
from app.main import create_app
from app.provisioning.service import provisioning
from app.runtime.kubernetes import KubernetesRuntime
from tests.factories import create_deployment, create_workspace
from tests.harness.kubernetes import KubeApiServer
from tests.integration.runtime.kube_support import get, objects, settings_for, unique_name


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> Iterator[httpx.Client]:
    with kube_apiserver.client() as client:
        yield client


@pytest.fixture
async def runtime(kube_apiserver: KubeApiServer) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(settings_for(kube_apiserver))
    yield runtime
    await runtime.aclose()


@pytest.fixture
async def app(
    settings: Settings, clock: FrozenClock, runtime: KubernetesRuntime
) -> AsyncIterator[FastAPI]:
    from tests.conftest import _empty_tables

    await _empty_tables(settings.database.url)
    quiet = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
    )
    application = create_app(quiet, clock, targets=[runtime])
    async with application.router.lifespan_context(application):
        yield application


async def _set_scheduler_cpu(app: FastAPI, name: str, cpu: str) -> None:
    # What the API refuses (422) but a row written by another version of Sextant could hold.
    async with app.state.context.sessionmaker() as session:
        deployment = (
            await session.scalars(select(Deployment).where(Deployment.name == name))
        ).one()
        components = {k: dict(v) for k, v in deployment.components.items()}
        components["scheduler"]["cpu"] = cpu
        deployment.components = components
        await session.commit()


async def _reconcile(app: FastAPI, name: str, clock: FrozenClock) -> Deployment:
    async with app.state.context.sessionmaker() as session:
        deployment = (
            await session.scalars(select(Deployment).where(Deployment.name == name))
        ).one()
        await provisioning.reconcile(
            session, deployment, app.state.targets, clock, app.state.context.settings.provisioning
        )
        await session.commit()
        return deployment  # type: ignore[no-any-return]


async def test_a_refused_object_fails_the_run_with_its_message_is_retried_and_degrades(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    clock: FrozenClock,
    kube: httpx.Client,
) -> None:
    name = unique_name()
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", name)
    await _set_scheduler_cpu(app, name, "one core")

    await _reconcile(app, name, clock)

    state = (await client.get(f"/api/v1/deployments/{name}/provisioning", headers=admin)).json()
    run = state["targets"][0]
    assert run["target"] == "runtime"
    assert run["status"] == "failed"
    assert run["attempts"] == 1
    assert "applying Deployment sextant-" in run["error"]
    assert "quantities must match the regular expression" in run["error"]
    deployment = (await client.get(f"/api/v1/deployments/{name}", headers=admin)).json()
    assert deployment["status"] == "degraded"
    assert "quantities must match" in deployment["status_reason"]
    # Every other object went in; only the refused one is missing.
    assert ("Deployment", "scheduler") not in objects(kube, name)
    assert ("Deployment", "workers") in objects(kube, name)

    # Retried once its backoff has passed; after the fix it succeeds.
    await _set_scheduler_cpu(app, name, "500m")
    await reconcile_due(app.state.context, app.state.targets)
    assert (await client.get(f"/api/v1/deployments/{name}/provisioning", headers=admin)).json()[
        "targets"
    ][0]["status"] == "failed"
    clock.advance(max(app.state.context.settings.provisioning.backoff))
    await reconcile_due(app.state.context, app.state.targets)

    healed = (await client.get(f"/api/v1/deployments/{name}/provisioning", headers=admin)).json()
    assert healed["targets"][0]["status"] == "succeeded"
    assert healed["targets"][0]["attempts"] == 0
    assert healed["status"] == "provisioning"
    scheduler = objects(kube, name)[("Deployment", "scheduler")]
    resources = scheduler["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["cpu"] == "500m"


async def test_an_unchanged_deployment_forced_through_the_engine_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    name = unique_name()
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", name)
    path = f"/api/v1/deployments/{name}/provisioning/sync"

    first = (await client.post(path, headers=admin)).json()["targets"][0]
    forced = (await client.post(path, params={"force": "true"}, headers=admin)).json()["targets"][0]

    assert first["status"] == forced["status"] == "succeeded"
    assert first["writes"] > 20
    assert forced["writes"] == 0


async def test_deleting_a_deployment_removes_its_namespace_and_not_the_other(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str], kube: httpx.Client
) -> None:
    short = unique_name("etl")
    long = f"{short}-prod"
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", short)
    await create_deployment(client, admin, "data-eng", long)
    await reconcile_due(app.state.context, app.state.targets)
    kept = objects(kube, long)

    response = await client.delete(f"/api/v1/deployments/{short}", headers=admin)

    assert response.status_code == 204
    namespace = get(kube, "Namespace", f"sextant-{short}", None)
    assert namespace is not None
    assert namespace["status"]["phase"] == "Terminating"
    other = get(kube, "Namespace", f"sextant-{long}", None)
    assert other is not None
    assert "deletionTimestamp" not in other["metadata"]
    assert {k: o["metadata"]["resourceVersion"] for k, o in objects(kube, long).items()} == {
        k: o["metadata"]["resourceVersion"] for k, o in kept.items()
    }
    assert (await client.get(f"/api/v1/deployments/{long}", headers=admin)).status_code == 200
