"""Replay recorded Airflow StatsD traffic through a real statsd_exporter into a real Prometheus.

The capture (tests/fixtures/statsd/airflow-3.3.2-celery.statsd) is about 270 s of a real Airflow
3.3.2. Replaying it with its relative timing compressed (`speedup`) keeps what rate() and the
heartbeat rules need, counters that rise across many scrapes (Prometheus here scrapes every
second), in a few seconds of test time. Lines are sent over statsd_exporter's TCP listener, which
parses them exactly as it parses UDP datagrams, because a compressed burst over UDP loses
datagrams in the kernel on a busy machine; the exporter's own `statsd_exporter_lines_total` then
proves every line arrived.

The scrape target is declared the way production declares it: `PrometheusTarget` writes the
deployment's file_sd file, which gives the series their `workspace` and `deployment` labels.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.core.settings import PrometheusSettings
from app.observability.prometheus_target import PrometheusTarget, file_sd_scrape_config
from app.observability.statsd import MAPPING_PATH
from app.provisioning.targets import DeploymentView
from tests.harness.components import (
    ComponentDirs,
    PrometheusServer,
    StatsdExporter,
    start_prometheus,
    start_statsd_exporter,
)
from tests.harness.plugin import start_component

CAPTURE = Path(__file__).resolve().parent / "fixtures" / "statsd" / "airflow-3.3.2-celery.statsd"
WORKSPACE = "data-eng"
DEPLOYMENT = "etl-prod"


@dataclass(frozen=True, slots=True)
class CaptureLine:
    """One recorded StatsD line and when it arrived (seconds on the capture's clock)."""

    at: float
    line: str


def read_capture(path: Path = CAPTURE) -> list[CaptureLine]:
    """Every line of the capture, in order."""
    lines = []
    for row in path.read_text().splitlines():
        at, _, line = row.partition("\t")
        lines.append(CaptureLine(float(at), line))
    return lines


def replay(
    exporter: StatsdExporter, lines: Sequence[CaptureLine], speedup: float | None = 20.0
) -> None:
    """Send `lines` to the exporter, `speedup` times faster than recorded (None: at once)."""
    with socket.create_connection((exporter.host, exporter.statsd_port), timeout=10) as sock:
        started = time.monotonic()
        origin = lines[0].at if lines else 0.0
        for at, group in itertools.groupby(lines, key=lambda item: item.at):
            if speedup is not None:
                delay = (at - origin) / speedup - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
            sock.sendall("".join(f"{item.line}\n" for item in group).encode())


def exporter_counter(exporter: StatsdExporter, name: str) -> float:
    """A counter of the exporter's own metrics (e.g. statsd_exporter_lines_total)."""
    total = 0.0
    for row in exporter.metrics().splitlines():
        if row.startswith(name) and row[len(name) : len(name) + 1] in (" ", "{"):
            total += float(row.rsplit(" ", 1)[1])
    return total


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `check` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def prometheus_config(file_sd_dir: Path, rule_glob: str | None = None) -> str:
    """A Prometheus configuration scraping Sextant's file_sd targets every second."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [file_sd_scrape_config(file_sd_dir)],
    }
    if rule_glob is not None:
        config["rule_files"] = [rule_glob]
    return yaml.safe_dump(config, sort_keys=False)


def deployment_view(address: str | None) -> DeploymentView:
    """The deployment the replayed traffic belongs to."""
    return DeploymentView(
        name=DEPLOYMENT,
        workspace=WORKSPACE,
        executor="CeleryExecutor",
        airflow_version="3.3.2",
        components={},
        generation=1,
        metrics_address=address,
    )


@dataclass
class Replayed:
    """A Prometheus holding the replayed capture, and what fed it."""

    prometheus: PrometheusServer
    exporter: StatsdExporter
    lines_sent: int
    rules_dir: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result."""
        return self.prometheus.query(expr)

    def api(self, path: str) -> Any:
        """GET a Prometheus API path and return `data`."""
        with urllib.request.urlopen(f"{self.prometheus.url}{path}", timeout=10) as response:
            return json.load(response)["data"]


@contextmanager
def replayed_capture(
    component_dirs: ComponentDirs,
    workdir: Path,
    *,
    speedup: float | None = 40.0,
    with_rules: bool = True,
) -> Iterator[Replayed]:
    """Exporter (our mapping) and Prometheus (file_sd by PrometheusTarget) fed the capture.

    Started with the harness' own start functions, so a missing binary skips (or fails under
    SEXTANT_REQUIRE_REAL=1) as with its fixtures, but for a whole test module: the replay takes
    seconds and every test of a module reads the same result. With `with_rules`, the target
    also installs the rule catalogue and Prometheus evaluates it. Yields once every line reached
    the exporter and Prometheus scraped the final state; stops both afterwards.
    """
    exporter = start_component(lambda: start_statsd_exporter(component_dirs, MAPPING_PATH))
    prometheus: PrometheusServer | None = None
    try:
        file_sd_dir, rules_dir = workdir / "file_sd", workdir / "rules"
        settings = PrometheusSettings(
            file_sd_dir=file_sd_dir, rules_dir=rules_dir if with_rules else None, reload=False
        )
        target = PrometheusTarget(settings)
        view = deployment_view(f"{exporter.host}:{exporter.web_port}")
        asyncio.run(target.apply(view, target.render(view)))
        config = prometheus_config(file_sd_dir, str(rules_dir / "*.yml") if with_rules else None)
        prometheus = start_component(lambda: start_prometheus(component_dirs, config))
        wait_for(
            lambda: bool(prometheus.query(f'up{{deployment="{DEPLOYMENT}"}} == 1')),
            what="Prometheus to scrape the exporter found through file_sd",
        )
        lines = read_capture()
        replay(exporter, lines, speedup)
        wait_for(
            lambda: exporter_counter(exporter, "statsd_exporter_lines_total") >= len(lines),
            what=f"the exporter to receive all {len(lines)} lines",
        )
        # Two more scrapes, so that the last lines are in Prometheus.
        scraped = _scrapes(prometheus)
        wait_for(lambda: _scrapes(prometheus) >= scraped + 2, what="two scrapes after the replay")
        yield Replayed(prometheus, exporter, len(lines), rules_dir)
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()


def _scrapes(prometheus: PrometheusServer) -> float:
    # Each scrape of the deployment's target adds one `up` sample.
    result = prometheus.query(f'count_over_time(up{{deployment="{DEPLOYMENT}"}}[1h])')
    return sum(float(item["value"][1]) for item in result)


def series_labels(result: Sequence[dict[str, Any]]) -> Iterator[dict[str, str]]:
    """The label sets of a query result."""
    for item in result:
        yield dict(item["metric"])
