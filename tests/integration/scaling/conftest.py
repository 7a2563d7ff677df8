"""Fixtures of the scaling tests: one real statsd_exporter per deployment (the repo's mapping)
and a real Prometheus scraping them with the labels Sextant provisions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.harness.components import PrometheusServer, StatsdExporter
from tests.harness.plugin import ComponentFactory
from tests.integration.alerting.conftest import smtp_sink

__all__ = ["smtp_sink"]  # a fixture, shared with the alerting tests

MAPPING = REPO_ROOT / "deploy" / "statsd" / "mappings.yml"


@pytest.fixture
def exporters(
    statsd_exporter_factory: ComponentFactory[..., StatsdExporter],
) -> dict[str, StatsdExporter]:
    """One statsd_exporter per deployment, as each deployment runs its own."""
    return {
        "etl": statsd_exporter_factory(mapping_path=MAPPING),
        "bi": statsd_exporter_factory(mapping_path=MAPPING),
    }


@pytest.fixture
def prometheus(
    prometheus_factory: Callable[..., PrometheusServer], exporters: dict[str, StatsdExporter]
) -> PrometheusServer:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "airflow",
                "static_configs": [
                    {
                        "targets": [f"{e.host}:{e.web_port}"],
                        "labels": {"deployment": name, "workspace": "data-eng"},
                    }
                    for name, e in exporters.items()
                ],
            }
        ],
    }
    return prometheus_factory(config=yaml.safe_dump(config))
