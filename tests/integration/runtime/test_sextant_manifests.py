"""Sextant's own manifests (deploy/sextant/): valid for every supported Kubernetes version,
accepted by a real kube-apiserver, and their RBAC is exactly enough for the Kubernetes runtime."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from app.core.settings import KubernetesSettings
from app.deployments.spec import Executor
from app.integrations.kubernetes import KINDS
from app.runtime.base import ScaleRequest
from app.runtime.kubernetes import KubernetesRuntime
from tests.harness.kubernetes import KubeApiServer
from tests.integration.runtime.kube_support import unique_name, view

SEXTANT_DIR = Path(__file__).resolve().parents[3] / "deploy" / "sextant"
SUPPORTED_VERSIONS = ["1.30", "1.31", "1.32", "1.33", "1.34", "1.35"]
APPLY = {"Content-Type": "application/apply-patch+yaml"}
JOB_PATH = "/apis/batch/v1/namespaces/{namespace}/jobs"


def sextant_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(SEXTANT_DIR.glob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in sextant_objects() if o["kind"] == kind]


def object_path(obj: dict[str, Any]) -> str:
    namespace = obj["metadata"].get("namespace")
    if obj["kind"] == "Job":
        return JOB_PATH.format(namespace=namespace) + "/" + str(obj["metadata"]["name"])
    return KINDS[obj["kind"]].path(str(obj["metadata"]["name"]), namespace)


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> Iterator[httpx.Client]:
    with kube_apiserver.client() as client:
        yield client


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    objects = sextant_objects()
    assert {o["kind"] for o in objects} >= {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "Secret", "Deployment", "Service", "PodDisruptionBudget", "Job",
    }  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_deployment_runs_two_ready_checked_scraped_non_root_replicas() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]

    assert deployment["spec"]["replicas"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["serviceAccountName"] == "sextant"
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"sextant"}
    (config,) = by_kind("ConfigMap")
    assert config["data"]["SEXTANT_RUNTIME"] == "kubernetes"
    (secret,) = by_kind("Secret")
    assert set(secret["stringData"]) >= {"SEXTANT_DATABASE_URL"}


def test_the_manifests_are_accepted_by_the_api_server(kube: httpx.Client) -> None:
    # As the README says: the namespace first, then the folder.
    for obj in sorted(sextant_objects(), key=lambda o: o["kind"] != "Namespace"):
        response = kube.patch(
            object_path(obj), json=obj, headers=APPLY, params={"fieldManager": "sextant-test"}
        )
        assert response.status_code in (200, 201), f"{obj['kind']}: {response.text}"


def _service_account_kubeconfig(server: KubeApiServer, kube: httpx.Client, directory: Path) -> Path:
    for obj in sorted(sextant_objects(), key=lambda o: o["kind"] != "Namespace"):
        if obj["kind"] in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
            response = kube.patch(
                object_path(obj), json=obj, headers=APPLY, params={"fieldManager": "sextant-test"}
            )
            assert response.is_success, response.text
    request = kube.post(
        "/api/v1/namespaces/sextant/serviceaccounts/sextant/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    assert request.status_code == 201, request.text
    token = request.json()["status"]["token"]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": server.url,
                    "certificate-authority-data": base64.b64encode(
                        server.ca_path.read_bytes()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "sextant", "user": {"token": token}}],
        "contexts": [{"name": "sextant", "context": {"cluster": "test", "user": "sextant"}}],
        "current-context": "sextant",
    }
    path = directory / "sextant-sa.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


async def test_the_service_accounts_rbac_is_enough_for_the_runtime(
    kube_apiserver: KubeApiServer, kube: httpx.Client, tmp_path: Path
) -> None:
    kubeconfig = _service_account_kubeconfig(kube_apiserver, kube, tmp_path)
    runtime = KubernetesRuntime(KubernetesSettings(kubeconfig=str(kubeconfig)))
    name = unique_name()
    deployment = view(name)
    try:
        first = await runtime.apply(deployment, runtime.render(deployment))
        local = view(name, executor=Executor.LOCAL, generation=2)
        pruned = await runtime.apply(local, runtime.render(local))
        scaled = await runtime.scale(local, ScaleRequest("scheduler", 2))
        status = await runtime.status(local)
        removed = await runtime.remove(local)
    finally:
        await runtime.aclose()

    assert first.writes > 20
    assert "pruned" in pruned.detail
    assert scaled.writes == 1
    assert {c.component for c in status.components} >= {"scheduler", "statsd"}
    assert removed.writes == 1


def test_the_service_account_may_not_grant_itself_more(
    kube_apiserver: KubeApiServer, kube: httpx.Client, tmp_path: Path
) -> None:
    kubeconfig = yaml.safe_load(
        _service_account_kubeconfig(kube_apiserver, kube, tmp_path).read_text()
    )
    token = kubeconfig["users"][0]["user"]["token"]
    with httpx.Client(
        base_url=kube_apiserver.url,
        verify=kube_apiserver.ssl_context(),
        headers={"Authorization": f"Bearer {token}"},
    ) as sextant:
        binding = sextant.post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json={
                "metadata": {"name": f"escalate-{unique_name()}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "sextant", "namespace": "sextant"}],
            },
        )
        nodes = sextant.get("/api/v1/nodes")
        watch = sextant.get("/api/v1/namespaces/default/secrets", params={"watch": "true"})

    assert binding.status_code == 403
    assert nodes.status_code == 403
    assert watch.status_code == 403
