"""The "prometheus" provisioning target: scrape targets that carry identity, and the rule files.

Every deployment's StatsD exporter, and the Flower of a Celery deployment (its per-worker gauges
tell the autoscaler which workers are idle), are scraped with `workspace` and `deployment` labels
attached by Prometheus at ingest, so no rule, dashboard or alert has to recover identity from
addresses with regexes (Astronomer's relabel-regex breakage). Two ways, one per runtime:

- local runtime: a file_sd file per deployment, `sextant-<deployment>.json` in
  `SEXTANT_PROMETHEUS_FILE_SD_DIR`, written atomically (temporary file in the same folder, then
  rename) so Prometheus never reads half a file; Prometheus re-reads file_sd files on its own.
  While no address of the deployment is known the file holds an empty list `[]`: a file is
  always written, so an address that goes away also removes the scrape target.
- Kubernetes runtime: the exporter's and Flower's Services carry `sextant.io/workspace` and
  `sextant.io/deployment` labels, which the scrape job maps to target labels with `labelmap`
  (`kubernetes_service_metadata`, `kubernetes_scrape_config`).

The rule catalogue is shared by all deployments: applying any deployment keeps the rule files in
`SEXTANT_PROMETHEUS_RULES_DIR` equal to the catalogue and asks Prometheus to reload only when a
rule file changed. A stamp file records the catalogue version Prometheus last reloaded, so a
reload that failed is retried by the next apply even though the files are already in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.settings import PrometheusSettings
from app.deployments.spec import Executor
from app.integrations.errors import TransientError
from app.integrations.prometheus import PrometheusClient
from app.observability.rules import RuleCatalogue, catalogue
from app.provisioning.targets import Applied, Artifact, DeploymentView

TARGET_NAME = "prometheus"
FILE_SD_PREFIX = "prometheus/file_sd/"
RULES_PREFIX = "prometheus/rules/"
RULE_FILE_PREFIX = "sextant-"
RELOAD_STAMP = ".sextant-rules-reloaded"
SCRAPE_JOB = "sextant-airflow"
# Kubernetes: identity on the scraped Services; only their ports with these names are scraped.
SERVICE_LABEL_WORKSPACE = "sextant.io/workspace"
SERVICE_LABEL_DEPLOYMENT = "sextant.io/deployment"
SCRAPE_ANNOTATION = "sextant.io/scrape"
SCRAPE_PORT_NAME = "metrics"
# Flower serves /metrics on its UI port, whose name the Service keeps.
FLOWER_PORT_NAME = "flower-ui"
# The label that sets Flower's target (and series) apart from the exporter's.
COMPONENT_LABEL = "component"
FLOWER_COMPONENT = "flower"


def file_sd_name(deployment: str) -> str:
    """The file_sd file of a deployment."""
    return f"sextant-{deployment}.json"


def render_file_sd(deployment: DeploymentView) -> str:
    """The deployment's file_sd JSON: its exporter (and a Celery deployment's Flower) with
    identity labels, or `[]` while no address is known. Flower's target also carries
    `component="flower"`, so that rules about the exporter (AirflowMetricsAbsent) leave it out."""
    identity = {"workspace": deployment.workspace, "deployment": deployment.name}
    groups: list[dict[str, Any]] = []
    if deployment.metrics_address:
        groups.append({"targets": [deployment.metrics_address], "labels": identity})
    if deployment.flower_address and deployment.executor == Executor.CELERY:
        labels = {**identity, COMPONENT_LABEL: FLOWER_COMPONENT}
        groups.append({"targets": [deployment.flower_address], "labels": labels})
    return json.dumps(groups, indent=2) + "\n"


def render_rule_files(rules: RuleCatalogue) -> list[Artifact]:
    """The catalogue's rule files as Prometheus loads them from the rules folder."""
    return [
        Artifact(f"{RULES_PREFIX}{RULE_FILE_PREFIX}{name}", text)
        for name, text in sorted(rules.files.items())
    ]


def file_sd_scrape_config(file_sd_dir: Path | str, job_name: str = SCRAPE_JOB) -> dict[str, Any]:
    """The scrape job that reads Sextant's file_sd files (for the local runtime's Prometheus)."""
    return {
        "job_name": job_name,
        "file_sd_configs": [{"files": [str(Path(file_sd_dir) / "sextant-*.json")]}],
    }


@dataclass(frozen=True, slots=True)
class ServiceMetadata:
    """Labels and annotations for a deployment's scraped Services on Kubernetes."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]


def kubernetes_service_metadata(deployment: DeploymentView) -> ServiceMetadata:
    """What the exporter's and Flower's Services carry so Prometheus labels their series with
    the identity.

    The Service's scrape port must be named `SCRAPE_PORT_NAME` (`FLOWER_PORT_NAME` for
    Flower). Workspace and deployment names are DNS-1123 labels of at most 40 characters, valid
    Kubernetes label values as they are.
    """
    return ServiceMetadata(
        labels={
            SERVICE_LABEL_WORKSPACE: deployment.workspace,
            SERVICE_LABEL_DEPLOYMENT: deployment.name,
            "app.kubernetes.io/managed-by": "sextant",
        },
        annotations={SCRAPE_ANNOTATION: "true"},
    )


def kubernetes_scrape_config(job_name: str = SCRAPE_JOB) -> dict[str, Any]:
    """The scrape job for exporter and Flower Services: identity from Service labels, via
    `labelmap`."""
    return {
        "job_name": job_name,
        "kubernetes_sd_configs": [{"role": "endpointslice"}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_service_annotation_sextant_io_scrape"],
                "action": "keep",
                "regex": "true",
            },
            {
                "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                "action": "keep",
                "regex": f"{SCRAPE_PORT_NAME}|{FLOWER_PORT_NAME}",
            },
            {
                "action": "labelmap",
                "regex": "__meta_kubernetes_service_label_sextant_io_(workspace|deployment)",
            },
            {
                "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                "regex": FLOWER_PORT_NAME,
                "target_label": COMPONENT_LABEL,
                "replacement": FLOWER_COMPONENT,
            },
        ],
    }


class PrometheusTarget:
    """Provisions scrape targets and the rule catalogue into a Prometheus's folders."""

    name = TARGET_NAME

    def __init__(
        self,
        settings: PrometheusSettings,
        client: PrometheusClient | None = None,
        rules: RuleCatalogue | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules if rules is not None else catalogue()
        if client is None and settings.url and settings.reload:
            client = PrometheusClient(settings.url, settings.timeout)
        self.client = client

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """The deployment's file_sd file and the shared rule files."""
        file_sd = Artifact(
            f"{FILE_SD_PREFIX}{file_sd_name(deployment.name)}", render_file_sd(deployment)
        )
        return [file_sd, *render_rule_files(self.rules)]

    def configured(self) -> bool:
        """Configured when Sextant knows where Prometheus reads file_sd files."""
        return self.settings.file_sd_dir is not None

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Write the file_sd file and the rule files that differ; reload when rules changed."""
        try:
            return await self._apply(artifacts)
        except OSError as exc:
            raise _file_error(exc) from exc

    async def _apply(self, artifacts: Sequence[Artifact]) -> Applied:
        file_sd_dir = self._file_sd_dir()
        writes = 0
        rule_files: dict[str, str] = {}
        for artifact in artifacts:
            if artifact.path.startswith(FILE_SD_PREFIX):
                name = artifact.path.removeprefix(FILE_SD_PREFIX)
                if await asyncio.to_thread(write_if_changed, file_sd_dir / name, artifact.content):
                    writes += 1
            elif artifact.path.startswith(RULES_PREFIX):
                rule_files[artifact.path.removeprefix(RULES_PREFIX)] = artifact.content
        details = []
        if self.settings.rules_dir is not None and rule_files:
            changed = await asyncio.to_thread(sync_rule_files, self.settings.rules_dir, rule_files)
            writes += changed
            if await self._reload_if_needed(self.settings.rules_dir, rule_files):
                writes += 1
                details.append("reloaded")
        return Applied(writes, ", ".join(details))

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Delete this deployment's file_sd file; the shared rule files stay."""
        path = self._file_sd_dir() / file_sd_name(deployment.name)
        try:
            removed = await asyncio.to_thread(_unlink, path)
        except OSError as exc:
            raise _file_error(exc) from exc
        return Applied(1 if removed else 0)

    async def _reload_if_needed(self, rules_dir: Path, rule_files: Mapping[str, str]) -> bool:
        version = rules_version(rule_files)
        stamp = rules_dir / RELOAD_STAMP
        current = await asyncio.to_thread(_read, stamp)
        if current == version:
            return False
        reloaded = False
        if self.client is not None:
            # Raises TransientError/PermanentError; the stamp stays old, so the next apply retries.
            await self.client.reload()
            reloaded = True
        await asyncio.to_thread(write_if_changed, stamp, version)
        return reloaded

    def _file_sd_dir(self) -> Path:
        if self.settings.file_sd_dir is None:
            raise RuntimeError("the prometheus target is not configured (no file_sd_dir)")
        return self.settings.file_sd_dir


def _file_error(exc: OSError) -> TransientError:
    # A full disk or a permission fixed by an operator heals; the engine retries with backoff.
    return TransientError(TARGET_NAME, f"{exc.strerror or type(exc).__name__}: {exc.filename}")


def rules_version(rule_files: Mapping[str, str]) -> str:
    """A digest of a set of rule files (name and text)."""
    digest = hashlib.sha256()
    for name in sorted(rule_files):
        digest.update(name.encode() + b"\0" + rule_files[name].encode() + b"\0")
    return digest.hexdigest()


def sync_rule_files(rules_dir: Path, rule_files: Mapping[str, str]) -> int:
    """Make Sextant's rule files in `rules_dir` exactly `rule_files`; returns files changed."""
    rules_dir.mkdir(parents=True, exist_ok=True)
    changed = 0
    for name, text in rule_files.items():
        if write_if_changed(rules_dir / name, text):
            changed += 1
    # A rule file dropped from the catalogue must not keep firing.
    for path in rules_dir.glob(f"{RULE_FILE_PREFIX}*.yml"):
        if path.name not in rule_files and _unlink(path):
            changed += 1
    return changed


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace `path` with `text` unless it already holds it; True if written."""
    if _read(path) == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name starts with a dot and ends in .tmp, so no file_sd or rule_files glob
    # (`sextant-*.json`, `*.yml`) ever matches it.
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        _unlink(Path(temporary))
        raise
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
