"""The Kubernetes API as the runtime needs it: server-side apply, list by label, create, delete,
scale, patch, on manifests that are plain dicts.

The client is `kubernetes_asyncio`, the asyncio flavour of the official client generated from the
same OpenAPI. Sextant is async end to end (FastAPI, APScheduler on the event loop); the sync
`kubernetes` client would need a thread per in-flight request, and applying a fleet fans out to
hundreds of requests. `kubernetes_asyncio` rides on aiohttp, which Sextant already has through
`elasticsearch[async]`. What the client is used for is what is hard to get right: kubeconfig
loading (client certificates, bearer tokens, exec plugins and their refresh, the in-cluster
service account) and the HTTP session. Requests go through its generic `call_api` with a path
from a small table of kinds, not through the typed per-kind APIs: the runtime works on rendered
YAML (dicts), and server-side apply takes them as they are.

Every failure becomes a `TransientError` (connection errors, timeouts, 5xx, 429, 409, a namespace
still being deleted) or a `PermanentError` (422 invalid, 403 forbidden, 400, 401, 404 where the
caller did not expect it), keeping the API server's own message (its `Status.message`) and the
object the request was about. Bodies, tokens and secrets are never part of a message.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from app.core.settings import KubernetesSettings
from app.integrations.errors import IntegrationError, PermanentError, TransientError

UPSTREAM = "kubernetes"
FIELD_MANAGER = "sextant"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
RBAC_HINT = "Sextant's identity lacks a permission; see deploy/sextant/rbac.yaml"

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    """Where the API serves one kind."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def collection(self, namespace: str | None) -> str:
        """The collection's path (in `namespace` for namespaced kinds)."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced; a namespace is needed")
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def path(self, name: str, namespace: str | None) -> str:
        """One object's path."""
        return f"{self.collection(namespace)}/{name}"


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("v1", "Namespace", "namespaces", namespaced=False),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Secret", "secrets"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ResourceQuota", "resourcequotas"),
        Kind("v1", "LimitRange", "limitranges"),
        Kind("v1", "Pod", "pods"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("apps/v1", "StatefulSet", "statefulsets"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
        Kind(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            namespaced=False,
        ),
    )
}


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    """The table entry of a manifest's kind; refuses a kind or version Sextant does not manage."""
    kind = KINDS.get(str(manifest.get("kind")))
    if kind is None or kind.api_version != manifest.get("apiVersion"):
        raise ValueError(f"unsupported kind {manifest.get('apiVersion')}/{manifest.get('kind')}")
    return kind


def describe(kind: str, name: str, namespace: str | None = None) -> str:
    """`Deployment sextant-etl/scheduler`: how messages name an object."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class KubernetesClient:
    """One API server, as configured by a kubeconfig (or the in-cluster service account)."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self._api: Any = None
        self._lock = asyncio.Lock()

    @staticmethod
    def in_cluster() -> bool:
        """Whether Sextant runs in a pod with a service account to talk to its cluster."""
        return "KUBERNETES_SERVICE_HOST" in os.environ and os.path.isfile(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        )

    def configured(self) -> bool:
        """A kubeconfig was given, or Sextant runs inside a cluster."""
        return bool(self.settings.kubeconfig) or self.in_cluster()

    async def _client(self) -> Any:
        # Loading a kubeconfig may run an exec plugin: done once, lazily, on the event loop.
        async with self._lock:
            if self._api is None:
                configuration = k8s_client.Configuration()
                try:
                    if self.settings.kubeconfig:
                        await k8s_config.load_kube_config(
                            config_file=self.settings.kubeconfig,
                            context=self.settings.context,
                            client_configuration=configuration,
                        )
                    elif self.in_cluster():
                        k8s_config.load_incluster_config(client_configuration=configuration)
                    else:
                        raise PermanentError(UPSTREAM, "not configured (no kubeconfig)")
                except (ConfigException, OSError, ValueError) as exc:
                    raise PermanentError(
                        UPSTREAM, f"cannot load the kubeconfig: {type(exc).__name__}: {exc}"
                    ) from exc
                configuration.connection_pool_maxsize = self.settings.connections
                api = k8s_client.ApiClient(configuration)
                api.user_agent = "sextant"
                self._api = api
            return self._api

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; returns the decoded JSON answer, or raises an IntegrationError."""
        api = await self._client()
        try:
            return await api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self.settings.timeout,
            )
        except ApiException as exc:
            raise api_error(action, exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(
                UPSTREAM, f"{action}: {type(exc).__name__}: {exc or 'no answer'}"
            ) from exc

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        """The object, or None if it does not exist."""
        entry = KINDS[kind]
        try:
            found: Manifest = await self.request(
                "GET",
                entry.path(name, namespace),
                action=f"reading {describe(kind, name, namespace)}",
            )
        except PermanentError as exc:
            if status_of(exc) == 404:
                return None
            raise
        return found

    async def list(
        self, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> list[Manifest]:
        """Objects of `kind` whose labels match every `selector` pair."""
        entry = KINDS[kind]
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        answer = await self.request(
            "GET",
            entry.collection(namespace),
            action=f"listing {entry.plural}" + (f" in {namespace}" if namespace else ""),
            query=[("labelSelector", label_selector)],
        )
        items: list[Manifest] = answer.get("items") or []
        for item in items:
            # List items come without their kind; callers key objects by it.
            item.setdefault("kind", entry.kind)
            item.setdefault("apiVersion", entry.api_version)
        return items

    async def apply(self, manifest: Mapping[str, Any], *, force: bool = True) -> Manifest:
        """Server-side apply `manifest` as field manager `sextant`; returns the live object.

        `force` takes over fields another manager set (someone's `kubectl edit`): Sextant's
        spec is the desired state. Without force a conflict is a 409 (TransientError).
        """
        entry = kind_of(manifest)
        metadata = manifest["metadata"]
        name, namespace = metadata["name"], metadata.get("namespace")
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        applied: Manifest = await self.request(
            "PATCH",
            entry.path(name, namespace),
            action=f"applying {describe(manifest['kind'], name, namespace)}",
            query=query,
            body=dict(manifest),
            content_type=APPLY_PATCH,
        )
        return applied

    async def create(self, manifest: Mapping[str, Any]) -> Manifest | None:
        """Create `manifest`; None when an object of that name already exists (it is kept)."""
        entry = kind_of(manifest)
        metadata = manifest["metadata"]
        name, namespace = metadata["name"], metadata.get("namespace")
        try:
            created: Manifest = await self.request(
                "POST",
                entry.collection(namespace),
                action=f"creating {describe(manifest['kind'], name, namespace)}",
                query=[("fieldManager", FIELD_MANAGER)],
                body=dict(manifest),
            )
        except TransientError as exc:
            if status_of(exc) == 409:
                return None
            raise
        return created

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete the object (dependents in the background); False if it was already gone."""
        entry = KINDS[kind]
        try:
            await self.request(
                "DELETE",
                entry.path(name, namespace),
                action=f"deleting {describe(kind, name, namespace)}",
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except PermanentError as exc:
            if status_of(exc) == 404:
                return False
            raise
        return True

    async def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]
    ) -> Manifest:
        """A JSON merge patch (for annotations on objects Sextant does not own, like pods)."""
        entry = KINDS[kind]
        patched: Manifest = await self.request(
            "PATCH",
            entry.path(name, namespace),
            action=f"patching {describe(kind, name, namespace)}",
            query=[("fieldManager", FIELD_MANAGER)],
            body=dict(patch),
            content_type=MERGE_PATCH,
        )
        return patched

    async def get_scale(self, kind: str, name: str, namespace: str) -> Manifest:
        """The object's `scale` subresource (spec.replicas, status.replicas)."""
        entry = KINDS[kind]
        scale: Manifest = await self.request(
            "GET",
            entry.path(name, namespace) + "/scale",
            action=f"reading the scale of {describe(kind, name, namespace)}",
        )
        return scale

    async def scale(self, kind: str, name: str, namespace: str, replicas: int) -> Manifest:
        """Set replicas through the `scale` subresource, touching nothing else of the object."""
        entry = KINDS[kind]
        scale: Manifest = await self.request(
            "PATCH",
            entry.path(name, namespace) + "/scale",
            action=f"scaling {describe(kind, name, namespace)}",
            query=[("fieldManager", FIELD_MANAGER)],
            body={"spec": {"replicas": replicas}},
            content_type=MERGE_PATCH,
        )
        return scale

    async def version(self) -> str:
        """The API server's version (`v1.35.8`); a cheap reachability check."""
        answer = await self.request("GET", "/version", action="reading the server version")
        return str(answer.get("gitVersion", "unknown"))


def api_error(action: str, exc: ApiException) -> IntegrationError:
    """The IntegrationError an API answer deserves, with the server's own message."""
    status = int(exc.status or 0)
    message = _server_message(exc)
    if status == 0:
        return TransientError(UPSTREAM, f"{action}: {exc.reason or 'no answer'}")
    if status == 403 and "being terminated" in message:
        # The namespace is on its way out; once it is gone, the next attempt recreates it.
        return TransientError(UPSTREAM, f"{action}: HTTP 403: {message}")
    if status == 403:
        return PermanentError(UPSTREAM, f"{action}: forbidden ({RBAC_HINT}): {message}")
    if status == 500 and "failed to convert new object" in message:
        # Server-side apply of a manifest the server cannot even decode (an invalid quantity)
        # answers 500 rather than 422 (seen on v1.35); sending it again gives the same answer.
        return PermanentError(UPSTREAM, f"{action}: HTTP {status}: {message}")
    transient = status in (408, 409, 425, 429) or status >= 500
    error = TransientError if transient else PermanentError
    return error(UPSTREAM, f"{action}: HTTP {status}: {message}")


def _server_message(exc: ApiException) -> str:
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            return str(exc.reason or "")
        if isinstance(decoded, dict) and decoded.get("message"):
            return str(decoded["message"])
    return str(exc.reason or "")


def status_of(exc: IntegrationError) -> int | None:
    """The HTTP status behind an error of this module, if the API server answered."""
    cause = exc.__cause__
    return int(cause.status) if isinstance(cause, ApiException) and cause.status else None
