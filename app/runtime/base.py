"""The runtime interface the provisioning engine and the autoscaler use.

A runtime is the first provisioning target (named "runtime"): applying a deployment makes its
components run; removing it stops them and deletes what was created for it, and only that. It
also reports each component's observed state, scales a component, and says where the
deployment's StatsD exporter can be scraped (for the Prometheus target's file_sd entry).

    none        nothing runs; Sextant only watches deployments that run elsewhere
    local       supervised processes on this machine (the embedded default for trying Sextant)
    kubernetes  one namespace per deployment, server-side applied
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from app.provisioning.targets import Applied, Artifact, DeploymentView

TARGET_NAME = "runtime"


class ComponentState(StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    CRASHLOOP = "crashloop"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """What a runtime observes of one component."""

    component: str
    desired: int
    ready: int
    state: ComponentState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    components: tuple[ComponentStatus, ...] = ()

    @property
    def all_running(self) -> bool:
        """Whether every component with desired replicas has them ready."""
        return all(c.ready >= c.desired for c in self.components if c.desired > 0)

    def problems(self) -> list[str]:
        """One line per component that is not as desired."""
        return [
            f"{c.component}: {c.state.value}{' (' + c.reason + ')' if c.reason else ''}"
            for c in self.components
            if c.desired > 0 and c.ready < c.desired
        ]


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """Running tasks on one Celery worker, for choosing who leaves on scale-down."""

    worker: str
    running_tasks: int


@dataclass(frozen=True, slots=True)
class ScaleRequest:
    component: str
    replicas: int
    # Workers to remove first when scaling down (idle ones), if the runtime can choose.
    victims: Sequence[str] = field(default_factory=tuple)
    # Running tasks per worker, when known: a runtime that cannot pick who leaves itself (a
    # ReplicaSet) is told how costly each worker is to lose.
    loads: Sequence[WorkerLoad] = field(default_factory=tuple)


class Runtime(Protocol):
    """A provisioning target that runs deployments, plus status, scaling and endpoints."""

    name: str

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """The deployment's runtime artifacts (manifests, process specs); pure."""
        ...

    def configured(self) -> bool:
        """Whether this runtime can act (e.g. a reachable cluster configured)."""
        ...

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Make the deployment's components run as specified; idempotent."""
        ...

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Stop the deployment's components and delete what was created for it, only that."""
        ...

    async def status(self, deployment: DeploymentView) -> RuntimeStatus:
        """The observed state of each component."""
        ...

    async def scale(self, deployment: DeploymentView, request: ScaleRequest) -> Applied:
        """Set a component's replicas (workers leave with a warm shutdown)."""
        ...

    async def worker_load(self, deployment: DeploymentView) -> Sequence[WorkerLoad]:
        """Running tasks per Celery worker (empty when the runtime cannot tell)."""
        ...

    def metrics_address(self, deployment: str) -> str | None:
        """host:port of the deployment's StatsD exporter scrape endpoint, if Prometheus should
        scrape it through file_sd (None on Kubernetes, where service discovery finds it)."""
        ...
