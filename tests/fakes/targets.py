"""A provisioning target fake: records what it was asked to do, and fails on command."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.integrations.errors import PermanentError, TransientError
from app.provisioning.targets import Applied, Artifact, DeploymentView


@dataclass
class FakeTarget:
    """A target whose upstream is a dict; `fail_with` makes the next calls raise."""

    name: str
    is_configured: bool = True
    fail_with: type[TransientError] | type[PermanentError] | None = None
    store: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        body = f"{deployment.workspace}/{deployment.name}: {dict(deployment.components)}"
        return [Artifact(f"{self.name}/{deployment.name}.txt", body)]

    def configured(self) -> bool:
        return self.is_configured

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        self.calls.append(("apply", deployment.name))
        if self.fail_with is not None:
            raise self.fail_with(self.name, "upstream said no")
        writes = 0
        for artifact in artifacts:
            if self.store.get(artifact.path) != artifact.content:
                self.store[artifact.path] = artifact.content
                writes += 1
        return Applied(writes)

    async def remove(self, deployment: DeploymentView) -> Applied:
        self.calls.append(("remove", deployment.name))
        if self.fail_with is not None:
            raise self.fail_with(self.name, "upstream said no")
        mine = [path for path in self.store if path.endswith(f"/{deployment.name}.txt")]
        for path in mine:
            del self.store[path]
        return Applied(len(mine))
