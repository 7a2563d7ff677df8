"""What a provisioning target is: render a deployment's artifacts, apply them, remove them.

Rendering is pure (the same deployment always gives the same text), so `sextant render` can write
every artifact without any service configured, and the engine can skip a target whose rendered
content has not changed since it was last applied. Applying is idempotent and reports how many
writes it issued upstream, so "an unchanged deployment costs no write" is measurable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """What targets know of a deployment: its identity and desired spec, nothing mutable."""

    name: str
    workspace: str
    executor: str
    airflow_version: str
    components: Mapping[str, Mapping[str, Any]]
    generation: int
    log_retention_days: int = 15
    # Where this deployment's StatsD exporter can be scraped (host:port), when its runtime knows.
    metrics_address: str | None = None
    # Where its Flower can be scraped (host:port), when its runtime knows (the local runtime).
    flower_address: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Artifact:
    """One rendered file: a path relative to the render root, and its text."""

    path: str
    content: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What an apply or remove did upstream."""

    writes: int
    detail: str = ""


class Target(Protocol):
    """One place a deployment is provisioned into (runtime, Prometheus, Grafana, ...)."""

    name: str

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """The deployment's artifacts for this target; pure and deterministic."""
        ...

    def configured(self) -> bool:
        """Whether the upstream is configured, so that apply and remove can run."""
        ...

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Make the upstream match the artifacts; idempotent."""
        ...

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Remove what was provisioned for this deployment, and only that."""
        ...


def content_hash(artifacts: Sequence[Artifact]) -> str:
    """A hash of the rendered content, to tell whether a target needs applying again."""
    digest = hashlib.sha256()
    for artifact in sorted(artifacts, key=lambda a: a.path):
        digest.update(artifact.path.encode())
        digest.update(b"\0")
        digest.update(artifact.content.encode())
        digest.update(b"\0")
    return digest.hexdigest()
