"""The Kubernetes runtime: one namespace per deployment, server-side applied, pruned by label.

Commander's job in Astronomer, without Helm: the deployment's objects are rendered from
`deploy/templates/` (see `kubernetes_manifests`) and applied with server-side apply as field
manager `sextant`, with `force` so that Sextant's spec wins over hand edits. One apply:

1. the namespace `sextant-<name>` (refused if it exists without Sextant's labels, retried later
   if it is still terminating from an earlier delete);
2. one list per kind of what Sextant labelled for this deployment in it (the inventory);
3. root Secrets (Fernet key, API secret key, metadata connection, Redis password) created only
   when absent: read first, generated once, never rotated by a re-apply, and one that an
   operator created beforehand is kept as it is; Secrets derived from them (PgBouncer users,
   exporter connection, broker URL) are applied from the roots' live values;
4. everything else, non-workloads first, a bounded number of requests in flight. An object
   whose live copy is in sync (it carries the digest of this very manifest, and every field the
   manifest sets has its value) is not sent at all; anything else, drift included, is applied;
5. pruning: whatever the inventory holds that the render does not (Celery → Local drops the
   workers, Redis, Flower and their Secrets) is deleted.

`Applied.writes` counts objects that really changed: creations, deletions, and applies after
which the object's `resourceVersion` differs from the inventory's (a no-op server-side apply
leaves it alone).

Status comes from the workloads' observed state (`readyReplicas`, `observedGeneration`) and the
pods' container states (CrashLoopBackOff); without a kubelet nothing is ever ready, so components
report `starting`. Scaling goes through the `scale` subresource; before a scale-down of workers,
the idle workers the caller names get a low `controller.kubernetes.io/pod-deletion-cost` and the
others their running tasks, so the ReplicaSet removes the idle ones first; a pod whose load the
caller does not know gets no annotation. The runtime does not ask Celery itself: the autoscaler
reads the loads from Flower's metrics in Prometheus (Flower's Service is scraped with the
deployment's identity, like the exporter's). The deployment's
spec stays the source of truth for replicas: the next apply of a changed spec (or a forced sync)
sets them back to the spec's, so whoever scales records the new count in the spec too (the
autoscaler does).

The metadata database itself (`airflow_<name>` on `SEXTANT_KUBERNETES_METADATA_HOST`) is not
created here: its role's password is in the deployment's Secret `airflow-metadata` for the
database's administrator, or the Secret can be created beforehand with existing credentials.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from app.core.settings import KubernetesSettings, Settings
from app.deployments.spec import CATALOGUE, Component, Executor, components_for
from app.integrations.errors import IntegrationError, PermanentError, TransientError
from app.integrations.kubernetes import KubernetesClient, Manifest
from app.provisioning.targets import Applied, Artifact, DeploymentView
from app.runtime import kubernetes_manifests as manifests
from app.runtime.base import (
    TARGET_NAME,
    ComponentState,
    ComponentStatus,
    Runtime,
    RuntimeStatus,
    ScaleRequest,
    WorkerLoad,
)

logger = logging.getLogger(__name__)

UPSTREAM = "kubernetes"
# A victim's deletion cost: below every other worker's (the default is 0).
VICTIM_DELETION_COST = "-1000"
# Busy workers cost their running tasks, capped well inside the annotation's int32 range.
MAX_DELETION_COST = 1_000_000
CRASHING_REASONS = frozenset({"CrashLoopBackOff"})
STUCK_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}
)

T = TypeVar("T")
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Inventory:
    """What Sextant labelled for a deployment in its namespace, by (kind, name)."""

    objects: Mapping[Key, Manifest]

    def version(self, key: Key) -> str | None:
        """The object's resourceVersion, or None if it is not there."""
        found = self.objects.get(key)
        return None if found is None else str(found["metadata"].get("resourceVersion"))


class KubernetesRuntime:
    """The runtime target for clusters; see the module docstring."""

    name = TARGET_NAME

    def __init__(
        self,
        settings: KubernetesSettings,
        *,
        elasticsearch_url: str | None = None,
        client: KubernetesClient | None = None,
    ) -> None:
        self.settings = settings
        self.elasticsearch_url = elasticsearch_url
        self.client = client if client is not None else KubernetesClient(settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRuntime:
        """The runtime as Sextant's settings configure it."""
        return cls(settings.kubernetes, elasticsearch_url=settings.elasticsearch.url)

    async def aclose(self) -> None:
        """Close the API client's HTTP session."""
        await self.client.aclose()

    # --- target ----------------------------------------------------------------------------

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """One YAML file per object (Secrets excepted: they are generated in the cluster)."""
        objects = manifests.render_objects(
            deployment, self.settings, elasticsearch_url=self.elasticsearch_url
        )
        return [Artifact(manifests.artifact_path(o), manifests.to_yaml(o)) for o in objects]

    def configured(self) -> bool:
        """A kubeconfig is set, or Sextant runs in a cluster."""
        return self.client.configured()

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Make the namespace hold exactly the rendered objects; see the module docstring."""
        objects = [
            manifests.from_yaml(a.content)
            for a in artifacts
            if a.path.startswith(manifests.ARTIFACT_PREFIX)
        ]
        namespaces = [o for o in objects if o["kind"] == "Namespace"]
        others = [o for o in objects if o["kind"] != "Namespace"]
        if len(namespaces) != 1:
            raise ValueError("the artifacts of a deployment hold exactly one Namespace")
        ns = manifests.namespace(deployment.name)
        live = await self.client.get("Namespace", ns)
        if live is not None:
            self._check_ours(live, deployment.name)
            if live["metadata"].get("deletionTimestamp"):
                raise TransientError(
                    UPSTREAM, f"namespace {ns} is still being deleted; it is recreated once gone"
                )
        counts = {"created": 0, "changed": 0, "unchanged": 0, "in sync": 0, "pruned": 0}
        if live is not None and manifests.in_sync(live, namespaces[0]):
            counts["in sync"] += 1
        else:
            applied_ns = await self.client.apply(namespaces[0])
            self._count(counts, None if live is None else _version(live), applied_ns)
        # A namespace that did not exist holds nothing: no need to ask.
        inventory = await self._inventory(deployment.name) if live else Inventory({})

        created_secrets, derived = await self._secrets(deployment, inventory)
        counts["created"] += created_secrets
        desired = [*derived, *others]
        roots = manifests.root_secret_names(Executor(deployment.executor))
        wanted = {_key(o) for o in desired} | {("Secret", name) for name in roots}
        for phase in (
            [o for o in desired if o["kind"] not in manifests.WORKLOAD_KINDS],
            [o for o in desired if o["kind"] in manifests.WORKLOAD_KINDS],
        ):
            results = await self._bounded(self._apply_one(o, inventory) for o in phase)
            for outcome in results:
                counts[outcome] += 1

        stale = [key for key in inventory.objects if key not in wanted]
        deleted = await self._bounded(self.client.delete(kind, name, ns) for kind, name in stale)
        counts["pruned"] = sum(deleted)
        writes = counts["changed"] + counts["created"] + counts["pruned"]
        detail = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        return Applied(writes, detail)

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Delete the deployment's namespace, and so everything in it; nothing else."""
        ns = manifests.namespace(deployment.name)
        live = await self.client.get("Namespace", ns)
        if live is None:
            return Applied(0, "namespace already gone")
        self._check_ours(live, deployment.name)
        if live["metadata"].get("deletionTimestamp"):
            return Applied(0, "namespace already terminating")
        deleted = await self.client.delete("Namespace", ns)
        return Applied(1 if deleted else 0, f"namespace {ns} deleted" if deleted else "")

    # --- runtime ---------------------------------------------------------------------------

    async def status(self, deployment: DeploymentView) -> RuntimeStatus:
        """Each component's replicas as its workload reports them, and crash loops from pods."""
        ns = manifests.namespace(deployment.name)
        selector = manifests.selector(deployment.name)
        deployments, statefulsets, pods = await asyncio.gather(
            self.client.list("Deployment", ns, selector),
            self.client.list("StatefulSet", ns, selector),
            self.client.list("Pod", ns, selector),
        )
        workloads = {_key(w): w for w in (*deployments, *statefulsets)}
        problems = _pod_problems(pods)
        components = []
        for component in components_for(Executor(deployment.executor)):
            kind, name = manifests.WORKLOADS[component]
            workload = workloads.get((kind, name))
            components.append(
                _component_status(component, workload, deployment, problems.get(component.value))
            )
        return RuntimeStatus(tuple(components))

    async def scale(self, deployment: DeploymentView, request: ScaleRequest) -> Applied:
        """Set a component's replicas through its `scale` subresource.

        Before replicas go down, every worker pod gets its `controller.kubernetes.io/pod-deletion-
        cost`: the victims (Celery names, `celery@<pod>`, or pod names) the lowest, the others
        their running tasks from `request.loads` (a busy worker costs more to lose), and pods of
        unknown load none; so the ReplicaSet removes the victims, then the least busy.
        """
        component = Component(request.component)
        executor = Executor(deployment.executor)
        if component not in components_for(executor):
            raise ValueError(f"{component.value} does not run with {executor.value}")
        bounds = CATALOGUE[component]
        if not bounds.min_replicas <= request.replicas <= bounds.max_replicas:
            raise ValueError(
                f"{component.value} replicas must be between {bounds.min_replicas} and "
                f"{bounds.max_replicas}, not {request.replicas}"
            )
        ns = manifests.namespace(deployment.name)
        kind, name = manifests.WORKLOADS[component]
        writes = 0
        details = []
        if component is Component.WORKERS and (request.victims or request.loads):
            marked, missing = await self._mark_victims(
                deployment.name, request.victims, {w.worker: w.running_tasks for w in request.loads}
            )
            writes += marked
            if missing:
                details.append("no pod for " + ", ".join(sorted(missing)))
        current = await self.client.get_scale(kind, name, ns)
        before = int((current.get("spec") or {}).get("replicas", 0))
        if before != request.replicas:
            await self.client.scale(kind, name, ns, request.replicas)
            writes += 1
        details.insert(0, f"{component.value}: {before} -> {request.replicas}")
        return Applied(writes, "; ".join(details))

    async def worker_load(self, deployment: DeploymentView) -> Sequence[WorkerLoad]:
        """Empty: the runtime does not ask Celery; the autoscaler reads the workers' loads from
        Flower's metrics in Prometheus instead (`app.scaling.load.worker_load_query`)."""
        return ()

    def metrics_address(self, deployment: str) -> str | None:
        """None: Prometheus finds the exporter Service through Kubernetes service discovery."""
        return None

    # --- internals -------------------------------------------------------------------------

    def _check_ours(self, live: Manifest, deployment: str) -> None:
        labels = live["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in manifests.selector(deployment).items()):
            raise PermanentError(
                UPSTREAM,
                f"namespace {live['metadata']['name']} exists but was not created by Sextant for "
                f"deployment {deployment} (labels {manifests.LABEL_MANAGED_BY}=sextant, "
                f"{manifests.LABEL_DEPLOYMENT}={deployment}); Sextant leaves it alone",
            )

    async def _inventory(self, deployment: str) -> Inventory:
        ns = manifests.namespace(deployment)
        selector = manifests.selector(deployment)
        lists = await asyncio.gather(
            *(self.client.list(kind, ns, selector) for kind in manifests.PRUNABLE_KINDS)
        )
        objects: dict[Key, Manifest] = {}
        for items in lists:
            for item in items:
                objects[_key(item)] = item
        return Inventory(objects)

    async def _secrets(
        self, deployment: DeploymentView, inventory: Inventory
    ) -> tuple[int, list[Manifest]]:
        """Create missing root Secrets (how many were created), and the derived Secrets to apply.

        Root Secrets found in the inventory are kept as they are and listed again as wanted, so
        pruning leaves them alone.
        """
        executor = Executor(deployment.executor)
        created_count = 0
        roots: dict[str, dict[str, str]] = {}
        missing = []
        for name in manifests.root_secret_names(executor):
            found = inventory.objects.get(("Secret", name))
            if found is None:
                missing.append(name)
            else:
                roots[name] = manifests.decode_secret(found)
        generated = manifests.generate_root_secrets(deployment.name, missing)
        for name, data in generated.items():
            created = await self.client.create(manifests.secret_manifest(deployment, name, data))
            if created is None:
                # It exists without Sextant's labels (an operator made it): it is kept as it is.
                existing = await self.client.get(
                    "Secret", name, manifests.namespace(deployment.name)
                )
                if existing is None:
                    raise TransientError(UPSTREAM, f"Secret {name} vanished while being created")
                roots[name] = manifests.decode_secret(existing)
            else:
                roots[name] = data
                created_count += 1
        derived = manifests.derive_secrets(manifests.derived_secret_names(executor), roots)
        return created_count, [
            manifests.secret_manifest(deployment, name, data) for name, data in derived.items()
        ]

    async def _apply_one(self, manifest: Manifest, inventory: Inventory) -> str:
        live = inventory.objects.get(_key(manifest))
        if live is not None and manifests.in_sync(live, manifest):
            return "in sync"
        before = inventory.version(_key(manifest))
        applied = await self.client.apply(manifest)
        counts: dict[str, int] = {"changed": 0, "created": 0, "unchanged": 0}
        self._count(counts, before, applied)
        return next(k for k, v in counts.items() if v)

    @staticmethod
    def _count(counts: dict[str, int], before: str | None, applied: Manifest) -> None:
        if before is None:
            counts["created"] += 1
        elif before != _version(applied):
            counts["changed"] += 1
        else:
            counts["unchanged"] += 1

    async def _bounded(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        """Run calls with at most `concurrency` in flight; all finish, then the first error
        (if any) is raised, so one refused object does not stop the others."""
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(call: Awaitable[T]) -> T:
            async with limit:
                return await call

        results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            integration = [e for e in errors if isinstance(e, IntegrationError)]
            raise (integration or errors)[0]
        return [r for r in results if not isinstance(r, BaseException)]

    async def _mark_victims(
        self, deployment: str, victims: Sequence[str], loads: Mapping[str, int]
    ) -> tuple[int, set[str]]:
        ns = manifests.namespace(deployment)
        wanted = {v.split("@", 1)[-1]: v for v in victims}
        running = {worker.split("@", 1)[-1]: tasks for worker, tasks in loads.items()}
        pods = await self.client.list(
            "Pod",
            ns,
            {**manifests.selector(deployment), manifests.LABEL_COMPONENT: Component.WORKERS.value},
        )
        patches: list[tuple[str, str | None]] = []
        for pod in pods:
            name = pod["metadata"]["name"]
            cost = (pod["metadata"].get("annotations") or {}).get(manifests.POD_DELETION_COST)
            target = (
                VICTIM_DELETION_COST
                if name in wanted
                else str(min(running[name], MAX_DELETION_COST))
                if name in running
                else None
            )
            if cost != target:
                patches.append((name, target))
        await self._bounded(
            self.client.merge_patch(
                "Pod", name, ns, {"metadata": {"annotations": {manifests.POD_DELETION_COST: cost}}}
            )
            for name, cost in patches
        )
        present = {p["metadata"]["name"] for p in pods}
        return len(patches), {v for pod, v in wanted.items() if pod not in present}


def _key(manifest: Mapping[str, Any]) -> Key:
    return str(manifest["kind"]), str(manifest["metadata"]["name"])


def _version(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"].get("resourceVersion"))


def _pod_problems(pods: Sequence[Manifest]) -> dict[str, tuple[ComponentState, str]]:
    """Component → the worst container state among its pods (crash loops first)."""
    problems: dict[str, tuple[ComponentState, str]] = {}
    for pod in pods:
        component = (pod["metadata"].get("labels") or {}).get(manifests.LABEL_COMPONENT)
        if not component:
            continue
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            where = f"pod {pod['metadata']['name']} container {container.get('name')}: {reason}"
            if reason in CRASHING_REASONS:
                restarts = container.get("restartCount", 0)
                problems[component] = (ComponentState.CRASHLOOP, f"{where} ({restarts} restarts)")
            elif reason in STUCK_REASONS and component not in problems:
                message = waiting.get("message")
                problems[component] = (
                    ComponentState.STARTING,
                    where + (f" ({message})" if message else ""),
                )
    return problems


def _component_status(
    component: Component,
    workload: Manifest | None,
    deployment: DeploymentView,
    problem: tuple[ComponentState, str] | None,
) -> ComponentStatus:
    if workload is None:
        spec = deployment.components.get(component.value) or {}
        desired = int(spec.get("replicas", CATALOGUE[component].replicas))
        return ComponentStatus(
            component.value, desired, 0, ComponentState.STOPPED, "not created yet"
        )
    desired = int((workload.get("spec") or {}).get("replicas", 1))
    status = workload.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    if desired == 0:
        return ComponentStatus(component.value, 0, ready, ComponentState.STOPPED)
    if problem is not None:
        return ComponentStatus(component.value, desired, ready, problem[0], problem[1])
    generation = workload["metadata"].get("generation")
    observed = status.get("observedGeneration")
    if ready >= desired and observed == generation:
        return ComponentStatus(component.value, desired, ready, ComponentState.RUNNING)
    reason = f"{ready}/{desired} ready"
    if observed != generation:
        reason += "; rollout not observed yet"
    return ComponentStatus(component.value, desired, ready, ComponentState.STARTING, reason)


if TYPE_CHECKING:
    # mypy checks that the class implements the runtime interface.
    _conforms: type[Runtime] = KubernetesRuntime
