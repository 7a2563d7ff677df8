"""The Kubernetes runtime against a real kube-apiserver (no kubelet, no controllers): objects,
server-side apply, pruning, scaling, status, deletion, and the errors the server answers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.core.settings import KubernetesSettings
from app.deployments.spec import Executor
from app.integrations.errors import PermanentError, TransientError
from app.integrations.kubernetes import KubernetesClient
from app.provisioning.targets import Applied, DeploymentView
from app.runtime import kubernetes_manifests as manifests
from app.runtime.base import ComponentState, ScaleRequest
from app.runtime.kubernetes import KubernetesRuntime
from tests.harness.kubernetes import KubeApiServer
from tests.integration.runtime.kube_support import (
    get,
    objects,
    settings_for,
    unique_name,
    versions,
    view,
)

MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> Iterator[httpx.Client]:
    """The admin's HTTP client, to look at what the runtime did without its code."""
    with kube_apiserver.client() as client:
        yield client


@pytest.fixture
async def runtime(kube_apiserver: KubeApiServer) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(
        settings_for(kube_apiserver), elasticsearch_url="http://elasticsearch:9200"
    )
    yield runtime
    await runtime.aclose()


async def provision(runtime: KubernetesRuntime, deployment: DeploymentView) -> Applied:
    return await runtime.apply(deployment, runtime.render(deployment))


def secret_values(kube: httpx.Client, deployment: str) -> dict[str, dict[str, str]]:
    namespace = manifests.namespace(deployment)
    found = objects(kube, deployment)
    return {
        name: {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
        for (kind, name), obj in found.items()
        if kind == "Secret"
    } | _unlabelled_secrets(kube, namespace)


def _unlabelled_secrets(kube: httpx.Client, namespace: str) -> dict[str, dict[str, str]]:
    items = kube.get(f"/api/v1/namespaces/{namespace}/secrets").json()["items"]
    return {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in items
        if "sextant.io/deployment" not in (s["metadata"].get("labels") or {})
    }


# --- apply -----------------------------------------------------------------------------------


async def test_first_apply_creates_the_namespace_and_every_component_with_labels(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    deployment = view(name)

    applied = await provision(runtime, deployment)

    found = objects(kube, name)
    namespace = get(kube, "Namespace", f"sextant-{name}", None)
    assert namespace is not None
    assert namespace["metadata"]["labels"]["sextant.io/deployment"] == name
    assert namespace["metadata"]["labels"]["sextant.io/workspace"] == "data-eng"
    workloads = {n for (k, n) in found if k in ("Deployment", "StatefulSet")}
    assert workloads == {
        "scheduler", "api-server", "dag-processor", "triggerer", "workers", "flower",
        "pgbouncer", "redis", "statsd",
    }  # fmt: skip
    for obj in found.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "sextant"
        assert labels["app.kubernetes.io/instance"] == name
        assert labels["sextant.io/workspace"] == "data-eng"
    pod_components = {
        found[("Deployment", n)]["spec"]["template"]["metadata"]["labels"]["sextant.io/component"]
        for (k, n) in found
        if k == "Deployment"
    }
    assert {"scheduler", "api_server", "dag_processor", "triggerer", "workers"} <= pod_components
    secrets = {n for (k, n) in found if k == "Secret"}
    assert secrets == {
        "airflow-fernet-key", "airflow-api-secret-key", "airflow-metadata",
        "airflow-redis-password", "airflow-pgbouncer-users", "airflow-pgbouncer-stats",
        "airflow-broker-url",
    }  # fmt: skip
    # Every object, the namespace and every Secret counted once.
    assert applied.writes == len(found) + 1


async def test_second_apply_of_an_unchanged_deployment_writes_nothing(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    deployment = view(name)
    await provision(runtime, deployment)
    before = versions(kube, name)

    again = await provision(runtime, deployment)

    assert again.writes == 0
    assert versions(kube, name) == before


async def test_secrets_are_generated_once_and_kept_across_updates(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    await provision(runtime, view(name))
    first = secret_values(kube, name)

    changed = view(name, components={"scheduler": {"replicas": 2}}, generation=2)
    await provision(runtime, changed)
    second = secret_values(kube, name)

    assert first == second
    fernet = base64.urlsafe_b64decode(first["airflow-fernet-key"]["fernet-key"])
    assert len(fernet) == 32
    metadata = first["airflow-metadata"]
    assert metadata["connection"].endswith("@pgbouncer:6543/airflow-metadata")
    assert metadata["password"] in first["airflow-pgbouncer-users"]["users.txt"]
    assert first["airflow-redis-password"]["password"] in first["airflow-broker-url"]["connection"]
    # The spec change reached the cluster: two schedulers, now with a disruption budget.
    found = objects(kube, name)
    assert found[("Deployment", "scheduler")]["spec"]["replicas"] == 2
    assert ("PodDisruptionBudget", "scheduler") in found


async def test_a_secret_an_operator_created_is_kept_as_it_is(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    namespace = f"sextant-{name}"
    labels = {"app.kubernetes.io/managed-by": "sextant", "sextant.io/deployment": name}
    assert kube.post(
        "/api/v1/namespaces", json={"metadata": {"name": namespace, "labels": labels}}
    ).is_success
    own = base64.b64encode(b"operator-provided-fernet-key").decode()
    created = kube.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        json={"metadata": {"name": "airflow-fernet-key"}, "data": {"fernet-key": own}},
    )
    assert created.status_code == 201, created.text

    await provision(runtime, view(name))
    await provision(runtime, view(name))

    secret = get(kube, "Secret", "airflow-fernet-key", namespace)
    assert secret is not None
    assert secret["data"] == {"fernet-key": own}


async def test_switching_to_local_executor_prunes_workers_redis_flower(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    await provision(runtime, view(name))
    celery = objects(kube, name)

    applied = await provision(runtime, view(name, executor=Executor.LOCAL, generation=2))

    local = objects(kube, name)
    gone = set(celery) - set(local)
    assert gone == {
        ("Deployment", "workers"), ("Deployment", "flower"), ("StatefulSet", "redis"),
        ("Service", "flower"), ("Service", "redis"), ("PodDisruptionBudget", "workers"),
        ("Secret", "airflow-redis-password"), ("Secret", "airflow-broker-url"),
    }  # fmt: skip
    assert set(local) <= set(celery)
    scheduler_env = {
        e["name"]
        for e in local[("Deployment", "scheduler")]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert "AIRFLOW__CELERY__BROKER_URL" not in scheduler_env
    assert "LocalExecutor" in local[("ConfigMap", "airflow-config")]["data"]["airflow.cfg"]
    assert "pruned" in applied.detail


async def test_a_hand_edit_of_a_field_sextant_owns_is_reverted_and_counted(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    deployment = view(name)
    await provision(runtime, deployment)
    path = f"/apis/apps/v1/namespaces/sextant-{name}/deployments/workers"
    edit = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 30}}}}
    assert kube.patch(path, json=edit, headers=MERGE).is_success

    applied = await provision(runtime, deployment)

    assert applied.writes == 1
    workers = kube.get(path).json()
    assert workers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 600


async def test_an_object_the_api_server_refuses_fails_the_apply_with_its_message(
    runtime: KubernetesRuntime,
) -> None:
    deployment = view(unique_name(), components={"scheduler": {"cpu": "one core"}})

    with pytest.raises(PermanentError) as raised:
        await provision(runtime, deployment)

    message = str(raised.value)
    assert "Deployment" in message
    assert "scheduler" in message
    assert "quantities must match the regular expression" in message


async def test_a_too_long_label_is_refused_with_the_api_servers_message(
    runtime: KubernetesRuntime,
) -> None:
    deployment = view(unique_name(), workspace="w" * 64)

    with pytest.raises(PermanentError) as raised:
        await provision(runtime, deployment)

    assert "HTTP 422" in str(raised.value)
    assert "must be no more than 63" in str(raised.value)


async def test_a_namespace_sextant_did_not_create_is_neither_used_nor_deleted(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    assert kube.post(
        "/api/v1/namespaces", json={"metadata": {"name": f"sextant-{name}"}}
    ).is_success

    with pytest.raises(PermanentError, match="not created by Sextant"):
        await provision(runtime, view(name))
    with pytest.raises(PermanentError, match="not created by Sextant"):
        await runtime.remove(view(name))

    namespace = get(kube, "Namespace", f"sextant-{name}", None)
    assert namespace is not None
    assert "deletionTimestamp" not in namespace["metadata"]


# --- delete ----------------------------------------------------------------------------------


async def test_removing_a_deployment_deletes_its_namespace_and_nothing_of_another(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    # Prefix-sharing names: deleting `etl` must not touch `etl-prod`.
    short = unique_name("etl")
    long = f"{short}-prod"
    await provision(runtime, view(short))
    await provision(runtime, view(long))
    before = versions(kube, long)

    removed = await runtime.remove(view(short))
    again = await runtime.remove(view(short))

    assert removed.writes == 1
    assert again.writes == 0
    namespace = get(kube, "Namespace", f"sextant-{short}", None)
    assert namespace is not None
    assert namespace["metadata"].get("deletionTimestamp")
    assert namespace["status"]["phase"] == "Terminating"
    survivor = get(kube, "Namespace", f"sextant-{long}", None)
    assert survivor is not None
    assert "deletionTimestamp" not in survivor["metadata"]
    assert versions(kube, long) == before


async def test_removing_a_deployment_that_never_ran_is_a_no_op(runtime: KubernetesRuntime) -> None:
    removed = await runtime.remove(view(unique_name()))
    assert removed.writes == 0


async def test_applying_while_the_namespace_terminates_is_retried_later(
    runtime: KubernetesRuntime,
) -> None:
    name = unique_name()
    await provision(runtime, view(name))
    await runtime.remove(view(name))

    with pytest.raises(TransientError, match="still being deleted"):
        await provision(runtime, view(name))


# --- scale -----------------------------------------------------------------------------------


async def test_scaling_goes_through_the_scale_subresource_only(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    deployment = view(name)
    await provision(runtime, deployment)
    path = f"/apis/apps/v1/namespaces/sextant-{name}/deployments/workers"
    before = kube.get(path).json()

    scaled = await runtime.scale(deployment, ScaleRequest("workers", 3))
    same = await runtime.scale(deployment, ScaleRequest("workers", 3))

    after = kube.get(path).json()
    assert after["spec"]["replicas"] == 3
    assert after["spec"]["template"] == before["spec"]["template"]
    assert scaled.writes == 1
    assert same.writes == 0
    managers = {
        (m["manager"], m.get("subresource", "")) for m in after["metadata"]["managedFields"]
    }
    assert ("sextant", "scale") in managers


async def test_scaling_beyond_the_catalogue_or_a_component_the_executor_lacks_is_refused(
    runtime: KubernetesRuntime,
) -> None:
    local = view(unique_name(), executor=Executor.LOCAL)
    with pytest.raises(ValueError, match="does not run with LocalExecutor"):
        await runtime.scale(local, ScaleRequest("workers", 2))
    with pytest.raises(ValueError, match="between 1 and 4"):
        await runtime.scale(local, ScaleRequest("scheduler", 5))


async def test_scaling_a_component_that_is_not_there_is_a_permanent_error(
    runtime: KubernetesRuntime,
) -> None:
    with pytest.raises(PermanentError, match="HTTP 404"):
        await runtime.scale(view(unique_name()), ScaleRequest("workers", 2))


def _worker_pod(kube: httpx.Client, name: str, pod: str) -> None:
    labels = {
        "app.kubernetes.io/managed-by": "sextant",
        "sextant.io/deployment": name,
        "sextant.io/component": "workers",
    }
    body = {
        "metadata": {"name": pod, "labels": labels},
        "spec": {
            "serviceAccountName": "airflow",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 50000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "worker",
                    "image": "apache/airflow:3.3.2",
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "100m", "memory": "128Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    response = kube.post(f"/api/v1/namespaces/sextant-{name}/pods", json=body)
    assert response.status_code == 201, response.text


def _deletion_costs(kube: httpx.Client, name: str) -> dict[str, str | None]:
    pods = kube.get(f"/api/v1/namespaces/sextant-{name}/pods").json()["items"]
    return {
        p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(
            "controller.kubernetes.io/pod-deletion-cost"
        )
        for p in pods
    }


async def test_scaling_down_marks_the_idle_workers_to_go_first(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    deployment = view(name, components={"workers": {"replicas": 3}})
    await provision(runtime, deployment)
    # No kubelet, no ReplicaSet controller: the pods a ReplicaSet would own are made by hand.
    for pod in ("workers-a", "workers-b", "workers-c"):
        _worker_pod(kube, name, pod)

    first = await runtime.scale(
        deployment, ScaleRequest("workers", 2, victims=["celery@workers-b", "celery@gone"])
    )
    second = await runtime.scale(deployment, ScaleRequest("workers", 1, victims=["workers-c"]))

    # The earlier victim that stayed loses its low cost; the new one gets it.
    assert _deletion_costs(kube, name) == {
        "workers-a": None,
        "workers-b": None,
        "workers-c": "-1000",
    }
    assert first.writes == 2  # one pod annotated, one scale
    assert "no pod for celery@gone" in first.detail
    assert second.writes == 3  # two pods re-annotated, one scale
    workers = get(kube, "Deployment", "workers", f"sextant-{name}")
    assert workers is not None
    assert workers["spec"]["replicas"] == 1


# --- status ----------------------------------------------------------------------------------


async def test_status_without_a_kubelet_is_starting_and_without_a_namespace_stopped(
    runtime: KubernetesRuntime,
) -> None:
    name = unique_name()
    before = await runtime.status(view(name))
    await provision(runtime, view(name))
    after = await runtime.status(view(name))

    assert {c.state for c in before.components} == {ComponentState.STOPPED}
    assert {c.state for c in after.components} == {ComponentState.STARTING}
    assert not after.all_running
    scheduler = next(c for c in after.components if c.component == "scheduler")
    assert (scheduler.desired, scheduler.ready) == (1, 0)


async def test_status_reports_a_crash_looping_component_with_its_reason(
    runtime: KubernetesRuntime, kube: httpx.Client
) -> None:
    name = unique_name()
    await provision(runtime, view(name))
    _worker_pod(kube, name, "workers-x")
    status = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": "apache/airflow:3.3.2",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 7,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            ],
        }
    }
    patched = kube.patch(
        f"/api/v1/namespaces/sextant-{name}/pods/workers-x/status", json=status, headers=MERGE
    )
    assert patched.is_success, patched.text

    observed = await runtime.status(view(name))

    workers = next(c for c in observed.components if c.component == "workers")
    assert workers.state is ComponentState.CRASHLOOP
    assert "workers-x" in workers.reason
    assert "CrashLoopBackOff (7 restarts)" in workers.reason
    assert any(line.startswith("workers: crashloop") for line in observed.problems())


# --- errors ----------------------------------------------------------------------------------


async def test_a_user_without_rbac_gets_a_permanent_error_that_says_so(
    kube_apiserver: KubeApiServer,
) -> None:
    runtime = KubernetesRuntime(settings_for(kube_apiserver, restricted=True))
    try:
        with pytest.raises(PermanentError) as raised:
            await provision(runtime, view(unique_name()))
    finally:
        await runtime.aclose()

    message = str(raised.value)
    assert "forbidden" in message
    assert "deploy/sextant/rbac.yaml" in message
    assert 'User "sextant-limited" cannot get resource "namespaces"' in message


async def test_an_apply_without_force_that_conflicts_is_transient(
    kube_apiserver: KubeApiServer, kube: httpx.Client
) -> None:
    client = KubernetesClient(settings_for(kube_apiserver))
    name = f"conflict-{unique_name()}"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"key": "sextant"},
    }
    try:
        await client.apply(config_map)
        other = kube.patch(
            f"/api/v1/namespaces/default/configmaps/{name}",
            json={**config_map, "data": {"key": "someone else"}},
            headers={"Content-Type": "application/apply-patch+yaml"},
            params={"fieldManager": "someone-else", "force": "true"},
        )
        assert other.is_success, other.text
        with pytest.raises(TransientError, match="HTTP 409"):
            await client.apply(config_map, force=False)
        forced = await client.apply(config_map)
    finally:
        await client.aclose()
    assert forced["data"] == {"key": "sextant"}


async def test_an_unreachable_api_server_is_transient(
    kube_apiserver: KubeApiServer, tmp_path: object
) -> None:
    from pathlib import Path

    from tests.harness.process import free_port

    text = Path(kube_apiserver.kubeconfig_path).read_text()
    closed = text.replace(f":{kube_apiserver.port}", f":{free_port()}")
    path = Path(str(tmp_path)) / "closed.kubeconfig"
    path.write_text(closed)
    client = KubernetesClient(KubernetesSettings(kubeconfig=str(path), timeout=5))
    try:
        with pytest.raises(TransientError, match="reading Namespace"):
            await client.get("Namespace", "default")
    finally:
        await client.aclose()


async def test_a_missing_kubeconfig_is_a_permanent_error(tmp_path: object) -> None:
    client = KubernetesClient(KubernetesSettings(kubeconfig=f"{tmp_path}/nowhere"))
    with pytest.raises(PermanentError, match="cannot load the kubeconfig"):
        await client.get("Namespace", "default")
