"""Helpers for the Kubernetes runtime's tests against the real kube-apiserver (no fixtures here,
so that the local runtime's tests in this folder are not affected)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from app.core.settings import KubernetesSettings
from app.deployments.spec import CATALOGUE, Component, Executor, components_for
from app.integrations.kubernetes import KINDS
from app.provisioning.targets import DeploymentView
from app.runtime import kubernetes_manifests as manifests
from tests.harness.kubernetes import KubeApiServer


def unique_name(prefix: str = "k") -> str:
    """A deployment name no other test of the session uses (namespaces never go away here)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def view(
    name: str,
    *,
    executor: Executor = Executor.CELERY,
    workspace: str = "data-eng",
    components: Mapping[str, Mapping[str, Any]] | None = None,
    airflow_version: str = "3.3.2",
    generation: int = 1,
    **extra: Any,
) -> DeploymentView:
    """A deployment as the engine shows it to targets, with catalogue defaults."""
    spec: dict[str, dict[str, Any]] = {
        c.value: {
            "replicas": CATALOGUE[c].replicas,
            "cpu": CATALOGUE[c].cpu,
            "memory": CATALOGUE[c].memory,
        }
        for c in components_for(executor)
    }
    for component, overrides in (components or {}).items():
        spec.setdefault(component, {}).update(overrides)
    return DeploymentView(
        name=name,
        workspace=workspace,
        executor=executor.value,
        airflow_version=airflow_version,
        components=spec,
        generation=generation,
        extra={"worker_concurrency": 16, "max_workers": 10, **extra},
    )


def settings_for(server: KubeApiServer, *, restricted: bool = False) -> KubernetesSettings:
    """Runtime settings on the test server, as the admin (or the restricted user)."""
    kubeconfig = server.restricted_kubeconfig_path if restricted else server.kubeconfig_path
    return KubernetesSettings(kubeconfig=str(kubeconfig))


def objects(kube: httpx.Client, deployment: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object Sextant labelled for `deployment` in its namespace, read independently of
    the code under test: (kind, name) → object."""
    namespace = manifests.namespace(deployment)
    selector = f"app.kubernetes.io/managed-by=sextant,sextant.io/deployment={deployment}"
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in manifests.PRUNABLE_KINDS:
        response = kube.get(KINDS[kind].collection(namespace), params={"labelSelector": selector})
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            found[(kind, item["metadata"]["name"])] = item
    return found


def versions(kube: httpx.Client, deployment: str) -> dict[tuple[str, str], str]:
    """resourceVersion of every object of `deployment` (and of its namespace)."""
    found = {
        key: obj["metadata"]["resourceVersion"] for key, obj in objects(kube, deployment).items()
    }
    namespace = kube.get(f"/api/v1/namespaces/{manifests.namespace(deployment)}")
    if namespace.status_code == 200:
        found[("Namespace", manifests.namespace(deployment))] = namespace.json()["metadata"][
            "resourceVersion"
        ]
    return found


def get(kube: httpx.Client, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    """One object, or None on 404."""
    response = kube.get(KINDS[kind].path(name, namespace))
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


WORKLOAD_NAMES = {c: manifests.WORKLOADS[c][1] for c in Component}
