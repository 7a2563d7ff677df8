"""`sextant render`: every artifact of every deployment as files, for GitOps users.

The same pure renderers the provisioning engine applies, written under one folder:

    <out>/deployments/<name>/<target>/...     what each target would apply for the deployment
    <out>/deployments/<name>/fluentd/fluentd.conf
    <out>/statsd/mappings.yml                 the StatsD exporter mapping (shared)
    <out>/alertmanager/alertmanager.yml       Alertmanager → Sextant's webhook (shared)

Deterministic: the same database and settings give byte-identical files, so a diff in Git is a
change in the installation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.settings import Runtime, Settings
from app.deployments.models import Deployment
from app.observability import alertmanager, fluentd, statsd
from app.provisioning.service import provisioning
from app.provisioning.targets import Target

DEFAULT_ELASTICSEARCH_URL = "http://elasticsearch:9200"
LOCAL_STATE_DIR = "/var/lib/sextant"


async def render_files(
    session: AsyncSession, targets: Sequence[Target], settings: Settings
) -> dict[str, str]:
    """Relative path → text of every artifact of the installation."""
    files: dict[str, str] = {
        statsd.ARTIFACT_PATH: statsd.mapping_text(),
        "alertmanager/alertmanager.yml": alertmanager.render(settings.server.public_url),
    }
    rows = await session.scalars(
        select(Deployment).where(Deployment.status != "deleting").order_by(Deployment.name)
    )
    source: fluentd.LogSource = (
        fluentd.LocalFiles(LOCAL_STATE_DIR)
        if settings.runtime is Runtime.LOCAL
        else fluentd.KubernetesContainers()
    )
    for deployment in rows.all():
        view = await provisioning.view(session, deployment)
        base = f"deployments/{deployment.name}"
        for target in targets:
            for artifact in target.render(view):
                files[f"{base}/{artifact.path}"] = artifact.content
        files[f"{base}/fluentd/fluentd.conf"] = fluentd.render(
            deployment.name,
            view.workspace,
            elasticsearch_url=settings.elasticsearch.url or DEFAULT_ELASTICSEARCH_URL,
            source=source,
        )
    return files


def write_files(files: dict[str, str], out: Path) -> list[Path]:
    """Write the files under `out` (creating folders), in path order; returns what was written."""
    written = []
    for relative in sorted(files):
        path = out / relative
        if out.resolve() not in path.resolve().parents:
            raise ValueError(f"artifact path {relative!r} leaves the output folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        content = files[relative]
        path.write_text(content if content.endswith("\n") else content + "\n")
        written.append(path)
    return written
