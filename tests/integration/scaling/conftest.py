"""Fixtures of the scaling tests: one real statsd_exporter per deployment (the repo's mapping),
another per deployment standing in for its Flower (Flower's gauges sent as tagged StatsD lines,
no mapping), and a real Prometheus scraping them with the labels Sextant provisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
def flowers(
    statsd_exporter_factory: ComponentFactory[..., StatsdExporter],
) -> dict[str, StatsdExporter]:
    """What each deployment's Flower exports on /metrics, fed by `_support.flower_reports`."""
    return {"etl": statsd_exporter_factory(), "bi": statsd_exporter_factory()}


@pytest.fixture
def prometheus(
    prometheus_factory: Callable[..., PrometheusServer],
    exporters: dict[str, StatsdExporter],
    flowers: dict[str, StatsdExporter],
) -> PrometheusServer:
    def job(name: str, scraped: dict[str, StatsdExporter]) -> dict[str, Any]:
        return {
            "job_name": name,
            "static_configs": [
                {
                    "targets": [f"{e.host}:{e.web_port}"],
                    "labels": {"deployment": deployment, "workspace": "data-eng"},
                }
                for deployment, e in scraped.items()
            ],
        }

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [job("airflow", exporters), job("flower", flowers)],
    }
    return prometheus_factory(config=yaml.safe_dump(config))
