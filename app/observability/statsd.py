"""The StatsD exporter mapping every deployment's exporter runs with.

One committed file, `deploy/statsd/mappings.yml`, serves every deployment: a deployment's
identity is attached by Prometheus at scrape time (file_sd or Kubernetes Service labels), never
baked into the mapping, so the mapping needs no per-deployment rendering. The local and
Kubernetes runtimes take the text from here (to write next to the exporter, or into a
ConfigMap) and the exporter flag from `exporter_args`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from app.provisioning.targets import Artifact

MAPPING_PATH = Path(__file__).resolve().parents[2] / "deploy" / "statsd" / "mappings.yml"
# Where rendered artifacts put it (relative to a render root), and its ConfigMap key.
ARTIFACT_PATH = "statsd/mappings.yml"
CONFIGMAP_KEY = "mappings.yml"
# statsd_exporter's ports, as in the official chart.
INGEST_PORT = 9125
SCRAPE_PORT = 9102


@lru_cache
def mapping_text() -> str:
    """The mapping file's text."""
    return MAPPING_PATH.read_text()


def mapping_digest() -> str:
    """A short hash of the mapping, to roll exporters when it changes."""
    return hashlib.sha256(mapping_text().encode()).hexdigest()[:16]


def mapping_artifact() -> Artifact:
    """The mapping as a rendered artifact."""
    return Artifact(ARTIFACT_PATH, mapping_text())


def exporter_args(mapping_file: Path | str) -> list[str]:
    """The statsd_exporter arguments that load the mapping from `mapping_file`."""
    return [f"--statsd.mapping-config={mapping_file}"]
