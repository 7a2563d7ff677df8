"""The kube-apiserver harness: a real API server with RBAC, server-side apply and subresources."""

from __future__ import annotations

import base64
import os
import re
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.availability import ComponentUnavailable
from tests.harness.components import ComponentDirs
from tests.harness.kubernetes import (
    ADMIN_USER,
    BINARY,
    RESTRICTED_USER,
    SOURCE_DIR,
    KubeApiServer,
    check_up_to_date,
    sources_hash,
    start_kube_apiserver,
)
from tests.harness.plugin import start_component
from tests.harness.process import tcp_accepts

APPLY = {"Content-Type": "application/apply-patch+yaml"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def admin(kube_apiserver: KubeApiServer) -> Iterator[httpx.Client]:
    """Client of `sextant-admin` (system:masters), by bearer token."""
    with kube_apiserver.client() as client:
        yield client


@pytest.fixture
def restricted(kube_apiserver: KubeApiServer) -> Iterator[httpx.Client]:
    """Client of `sextant-limited` (no group), by bearer token."""
    with kube_apiserver.client(restricted=True) as client:
        yield client


@pytest.fixture
def namespace(admin: httpx.Client) -> str:
    """A new namespace for one test (never removed: nothing finalizes namespaces here)."""
    name = f"harness-{uuid.uuid4().hex[:8]}"
    response = admin.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert response.status_code == 201, response.text
    return name


def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    """Wait until `check()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.2)


def apply(client: httpx.Client, path: str, body: dict[str, Any], **params: str) -> httpx.Response:
    """Server-side apply of `body` (JSON is YAML) at `path`, as field manager `sextant`."""
    return client.patch(
        path, json=body, headers=APPLY, params={"fieldManager": "sextant", **params}
    )


def workload(kind: str, name: str, replicas: int) -> dict[str, Any]:
    """A minimal apps/v1 Deployment or StatefulSet."""
    labels = {"app": name}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": "apache/airflow:3.1.0"}]},
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def self_subject(client: httpx.Client) -> dict[str, Any]:
    """Who the API server takes the client for (SelfSubjectReview)."""
    response = client.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert response.status_code == 201, response.text
    user_info: dict[str, Any] = response.json()["status"]["userInfo"]
    return user_info


# --- the server ------------------------------------------------------------------------------


def test_reports_the_kubernetes_version_of_go_mod(admin: httpx.Client) -> None:
    go_mod = (SOURCE_DIR / "go.mod").read_text()
    pinned = re.search(r"^\s*k8s\.io/kubernetes (v\S+)$", go_mod, re.MULTILINE)
    assert pinned is not None

    version = admin.get("/version").json()

    assert version["gitVersion"] == pinned.group(1)


@pytest.mark.parametrize(
    ("group_version", "resources"),
    [
        (
            "api/v1",
            {"namespaces", "configmaps", "secrets", "services", "serviceaccounts"}
            | {"resourcequotas", "limitranges", "namespaces/finalize"},
        ),
        (
            "apis/apps/v1",
            {"deployments", "deployments/scale", "statefulsets", "statefulsets/scale"},
        ),
        ("apis/networking.k8s.io/v1", {"networkpolicies"}),
        ("apis/policy/v1", {"poddisruptionbudgets"}),
        ("apis/rbac.authorization.k8s.io/v1", {"roles", "rolebindings", "clusterroles"}),
    ],
)
def test_serves_the_resources_sextant_provisions(
    admin: httpx.Client, group_version: str, resources: set[str]
) -> None:
    response = admin.get(f"/{group_version}")

    assert response.status_code == 200, response.text
    served = {resource["name"] for resource in response.json()["resources"]}
    assert resources <= served


def test_listens_on_127_0_0_1_only(kube_apiserver: KubeApiServer) -> None:
    pid = kube_apiserver.process.pid
    assert pid is not None
    inodes = {
        target[len("socket:[") : -1]
        for target in (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
        if target.startswith("socket:[")
    }
    listening: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                listening.append(local)

    # The API server's port and etcd's peer port; etcd's clients use a unix socket.
    assert f"0100007F:{kube_apiserver.port:04X}" in listening
    assert all(local.startswith("0100007F:") for local in listening), listening


def test_restarts_on_the_same_port_with_its_objects_and_credentials(
    kube_apiserver: KubeApiServer, admin: httpx.Client, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/survivor"
    survivor = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "survivor"}}
    assert apply(admin, path, survivor).status_code == 201
    kubeconfig = kube_apiserver.kubeconfig_path.read_text()

    kube_apiserver.stop()
    try:
        assert not tcp_accepts(kube_apiserver.port)()
    finally:
        kube_apiserver.start()

    with kube_apiserver.client() as client:
        assert client.get(path).status_code == 200
    assert kube_apiserver.kubeconfig_path.read_text() == kubeconfig


# --- identities ------------------------------------------------------------------------------


def test_tokens_authenticate_the_admin_and_the_restricted_user(
    admin: httpx.Client, restricted: httpx.Client
) -> None:
    assert self_subject(admin)["username"] == ADMIN_USER
    assert "system:masters" in self_subject(admin)["groups"]
    assert self_subject(restricted)["username"] == RESTRICTED_USER
    assert self_subject(restricted)["groups"] == ["system:authenticated"]


@pytest.mark.parametrize(
    ("which", "user"),
    [("kubeconfig_path", ADMIN_USER), ("restricted_kubeconfig_path", RESTRICTED_USER)],
)
def test_kubeconfigs_authenticate_by_client_certificate(
    kube_apiserver: KubeApiServer, tmp_path: Path, which: str, user: str
) -> None:
    config = yaml.safe_load(getattr(kube_apiserver, which).read_text())
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    credentials = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    assert cluster["server"] == kube_apiserver.url
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.write_bytes(base64.b64decode(credentials["client-certificate-data"]))
    key.write_bytes(base64.b64decode(credentials["client-key-data"]))
    tls = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    tls.load_cert_chain(cert, key)

    with httpx.Client(base_url=cluster["server"], verify=tls) as client:
        assert self_subject(client)["username"] == user


def test_restricted_user_is_forbidden_until_a_role_is_bound(
    admin: httpx.Client, restricted: httpx.Client, namespace: str
) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"

    denied = restricted.get(configmaps)

    assert denied.status_code == 403
    assert denied.json()["reason"] == "Forbidden"
    assert f'User "{RESTRICTED_USER}" cannot list resource "configmaps"' in denied.json()["message"]

    # A Role with its own rules: the aggregated ClusterRoles (admin, edit, view) have none here,
    # as no controller fills them in.
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "configmap-writer"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "limited-writes-configmaps"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "configmap-writer",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RESTRICTED_USER}
        ],
    }
    assert apply(admin, f"{rbac}/roles/configmap-writer", role).status_code == 201
    assert (
        apply(admin, f"{rbac}/rolebindings/limited-writes-configmaps", binding).status_code == 201
    )

    # The RBAC authorizer reads bindings from an informer: a moment passes before it sees one.
    eventually(lambda: restricted.get(configmaps).status_code == 200)
    created = restricted.post(configmaps, json={"metadata": {"name": "by-limited"}})
    assert created.status_code == 201, created.text
    assert restricted.delete(f"{configmaps}/by-limited").status_code == 403
    assert restricted.get("/api/v1/namespaces/default/configmaps").status_code == 403


def test_aggregated_cluster_roles_are_empty_without_the_controller_manager(
    admin: httpx.Client,
) -> None:
    edit = admin.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/edit").json()

    assert edit["aggregationRule"]["clusterRoleSelectors"]
    assert not edit.get("rules")


# --- server-side apply and subresources ------------------------------------------------------


def test_server_side_apply_tracks_the_field_manager(admin: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/settings"
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"parallelism": "8"},
    }

    created = apply(admin, path, body)
    body["data"]["parallelism"] = "16"
    updated = apply(admin, path, body)
    conflict = apply(admin, path, {**body, "data": {"parallelism": "4"}}, fieldManager="other")
    forced = apply(
        admin, path, {**body, "data": {"parallelism": "4"}}, fieldManager="other", force="true"
    )

    assert created.status_code == 201, created.text
    managers = created.json()["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managers] == [("sextant", "Apply")]
    assert updated.status_code == 200
    assert updated.json()["data"] == {"parallelism": "16"}
    assert conflict.status_code == 409
    assert conflict.json()["reason"] == "Conflict"
    assert forced.status_code == 200
    assert forced.json()["data"] == {"parallelism": "4"}


@pytest.mark.parametrize(
    ("kind", "plural"), [("Deployment", "deployments"), ("StatefulSet", "statefulsets")]
)
def test_scale_subresource_changes_the_replicas(
    admin: httpx.Client, namespace: str, kind: str, plural: str
) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/{plural}/scheduler"
    assert apply(admin, path, workload(kind, "scheduler", replicas=1)).status_code == 201
    assert admin.get(f"{path}/scale").json()["spec"]["replicas"] == 1

    scaled = admin.patch(f"{path}/scale", json={"spec": {"replicas": 3}}, headers=MERGE_PATCH)

    assert scaled.status_code == 200, scaled.text
    assert scaled.json()["kind"] == "Scale"
    stored = admin.get(path).json()
    assert stored["spec"]["replicas"] == 3
    # No controller runs: the status never reports any replica.
    assert not stored.get("status", {}).get("replicas")


# --- what is missing without controllers -----------------------------------------------------


def test_deleted_namespace_stays_terminating_until_finalized(
    admin: httpx.Client, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}"
    assert admin.delete(path).status_code == 200

    stored = admin.get(path).json()
    refused = admin.post(f"{path}/configmaps", json={"metadata": {"name": "late"}})

    assert stored["metadata"]["deletionTimestamp"]
    assert stored["status"]["phase"] == "Terminating"
    assert stored["spec"]["finalizers"] == ["kubernetes"]
    assert refused.status_code == 403
    assert "is being terminated" in refused.json()["message"]

    # What the namespace controller would do once the namespace is empty.
    finalized = admin.put(f"{path}/finalize", json={**stored, "spec": {"finalizers": []}})

    assert finalized.status_code == 200, finalized.text
    assert admin.get(path).status_code == 404


def test_extra_arguments_reach_kube_apiserver(component_dirs: ComponentDirs) -> None:
    # Without its controller the namespace's "default" ServiceAccount never appears, and the
    # ServiceAccount admission plugin refuses pods; switching the plugin off lets a pod in.
    server = start_component(
        lambda: start_kube_apiserver(
            component_dirs, extra_args=["--disable-admission-plugins=ServiceAccount"]
        )
    )
    try:
        with server.client() as client:
            pod = {
                "metadata": {"name": "lonely"},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
            created = client.post("/api/v1/namespaces/default/pods", json=pod)
        assert created.status_code == 201, created.text
        assert created.json()["status"]["phase"] == "Pending"
    finally:
        server.stop()


# --- availability ----------------------------------------------------------------------------


def test_missing_binary_names_the_install_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEXTANT_TOOLS_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(ComponentUnavailable, match=r"sextant-kube-apiserver.*install-test-deps"):
        start_kube_apiserver(ComponentDirs(tmp_path))


def test_sources_hash_matches_the_install_scripts(tmp_path: Path) -> None:
    script = "export LC_ALL=C && sha256sum go.mod go.sum *.go | sha256sum | cut -c1-64"
    expected = subprocess.run(
        ["bash", "-c", script], cwd=SOURCE_DIR, capture_output=True, text=True, check=True
    ).stdout.strip()

    assert sources_hash() == expected


def test_binary_built_from_older_sources_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEXTANT_TOOLS_DIR", str(tmp_path))
    binary = tmp_path / "bin" / BINARY
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    stamp = tmp_path / f"{BINARY}.stamp"

    stamp.write_text("sources 0000\nbuild go build\n")
    with pytest.raises(ComponentUnavailable, match="other sources"):
        check_up_to_date(binary)

    stamp.write_text(f"sources {sources_hash()}\nbuild go build\n")
    check_up_to_date(binary)
