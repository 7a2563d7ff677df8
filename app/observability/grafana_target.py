"""The "grafana" provisioning target: a workspace's folder and dashboards, and the data source.

Dashboards are per workspace, not per deployment (their `deployment` variable lists the
workspace's deployments), so every deployment of a workspace renders the same artifacts: the
workspace's six dashboards, plus the Prometheus data source when its URL is known. Applying
them for the second deployment of a workspace reads Grafana and writes nothing.

Removing one deployment therefore removes nothing, unless it is the last deployment of its
workspace: then the workspace's dashboards go, and its folder too if nothing else (a user's own
dashboard) is left in it. The target only sees a DeploymentView, so the engine says "last one"
with `extra[LAST_IN_WORKSPACE] = True` on teardown; without it nothing is removed, which errs
on the side of keeping a workspace's dashboards. The data source serves the whole installation
and is never removed.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from typing import Any

from app.core.settings import GrafanaSettings, Settings
from app.integrations.grafana import GrafanaClient
from app.observability import dashboards
from app.provisioning.targets import Applied, Artifact, DeploymentView

# DeploymentView.extra key: True when no other deployment of the workspace remains.
LAST_IN_WORKSPACE = "last_in_workspace"
DASHBOARD_DIR = "grafana/dashboards"
DATASOURCE_PATH = "grafana/datasources/sextant-prometheus.json"


@functools.lru_cache(maxsize=1024)
def _workspace_dashboards(workspace: str) -> tuple[Artifact, ...]:
    # Rendering six dashboards costs milliseconds and every deployment of a workspace (and every
    # unchanged reconcile, for its content hash) asks for the same ones; they are pure.
    return tuple(
        Artifact(
            f"{DASHBOARD_DIR}/{workspace}/{spec.key}.json",
            dashboards.render_json(dashboards.instance(spec, workspace)),
        )
        for spec in dashboards.SPECS
    )


class GrafanaTarget:
    """Provision a deployment's workspace folder and dashboards (and the data source) in Grafana."""

    name = "grafana"

    def __init__(self, settings: GrafanaSettings, prometheus_url: str | None = None) -> None:
        self._settings = settings
        self._datasource_url = settings.datasource_url or prometheus_url
        self._client: GrafanaClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> GrafanaTarget:
        """The target for the running Sextant's settings."""
        return cls(settings.grafana, settings.prometheus.url)

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """The workspace's dashboards and the data source; the same for every deployment in it."""
        artifacts = list(_workspace_dashboards(deployment.workspace))
        if self._datasource_url:
            datasource = dashboards.prometheus_datasource(self._datasource_url)
            artifacts.append(Artifact(DATASOURCE_PATH, dashboards.render_json(datasource)))
        return artifacts

    def configured(self) -> bool:
        """Whether Grafana's URL and token are set."""
        return bool(self._settings.url and self._settings.token)

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Ensure the data source, the workspace folder and its dashboards; writes issued."""
        client = self._connected()
        workspace = deployment.workspace
        writes = 0
        models: list[dict[str, Any]] = []
        for artifact in artifacts:
            if artifact.path == DATASOURCE_PATH:
                writes += await client.ensure_datasource(json.loads(artifact.content))
            else:
                models.append(json.loads(artifact.content))
        folder = dashboards.folder_uid(workspace)
        writes += await client.ensure_folder(folder, dashboards.folder_title(workspace))
        writes += await client.upsert_dashboards(
            models, folder, message=f"Sextant: provisioned for {deployment.name}"
        )
        return Applied(writes, f"{len(models)} dashboards in folder {folder}")

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Remove the workspace's dashboards and folder, only when this is its last deployment."""
        if not deployment.extra.get(LAST_IN_WORKSPACE, False):
            return Applied(0, "dashboards are per workspace; other deployments still use them")
        client = self._connected()
        workspace = deployment.workspace
        uids = [dashboards.dashboard_uid(workspace, spec.key) for spec in dashboards.SPECS]
        writes = await client.delete_dashboards(uids)
        folder = dashboards.folder_uid(workspace)
        folder_writes = await client.delete_folder_if_empty(folder)
        detail = "removed the workspace's dashboards" + (
            " and folder" if folder_writes else "; the folder holds other dashboards, kept"
        )
        return Applied(writes + folder_writes, detail)

    async def aclose(self) -> None:
        """Close the Grafana client, if one was opened."""
        if self._client is not None:
            await self._client.aclose()
            self._client = self._loop = None

    def _connected(self) -> GrafanaClient:
        # The client's session and semaphore belong to one event loop; tests and the CLI may
        # run several loops one after another in the same process.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            url, token = self._settings.url, self._settings.token
            if not url or token is None:
                raise RuntimeError("Grafana is not configured")  # the engine checks configured()
            self._client = GrafanaClient(
                url,
                token.get_secret_value(),
                timeout=self._settings.timeout,
                concurrency=self._settings.concurrency,
            )
            self._loop = loop
        return self._client
