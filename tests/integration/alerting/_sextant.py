"""Sextant as operators run it (`sextant serve` in its own process), and a stalled heartbeat.

The multi-process alerting tests (several replicas, a SIGKILL mid-delivery) need Sextant as a real
child process configured only through `SEXTANT_*` variables, on a PostgreSQL database migrated by
`sextant db upgrade`, with tokens from `sextant tokens create`. `start_sextant` wraps that process
in the harness' `Component`, so `ComponentFactory` stops it after the test and a failed test's
report ends with its log.

The alert itself comes from real metrics: a statsd_exporter that received a few
`airflow.scheduler_heartbeat` increments and then nothing more, scraped by a real Prometheus
through a file_sd file rendered by Sextant's own Prometheus target (so the series carry
`workspace` and `deployment` at ingest), exactly the shape the rule catalogue expects.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import yaml

from app.observability.prometheus_target import file_sd_name, file_sd_scrape_config, render_file_sd
from app.provisioning.targets import DeploymentView
from tests.harness.components import (
    HOST,
    Component,
    ComponentDirs,
    PostgresServer,
    PrometheusServer,
    StatsdExporter,
)
from tests.harness.process import ManagedProcess, free_port, http_ok

REPO_ROOT = Path(__file__).resolve().parents[3]
HEARTBEAT_RULE = "AirflowSchedulerHeartbeatMissing"
HEARTBEAT_LINE = "airflow.scheduler_heartbeat:1|c"

T = TypeVar("T")


# --- waiting ---------------------------------------------------------------------------------


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy (returned); AssertionError at deadline.

    `what` names the awaited state in the failure message, with the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last seen: {value!r})")
        time.sleep(interval)


# --- Sextant as a process --------------------------------------------------------------------


def sextant_env(database_url: str, **settings: object) -> dict[str, str]:
    """The environment of a Sextant process: ours without any `SEXTANT_*`, plus `settings`.

    Keys are setting names without the prefix (`ALERTS_INTERVAL=1` is SEXTANT_ALERTS_INTERVAL).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEXTANT_")}
    env.update(
        {
            "SEXTANT_DATABASE_URL": database_url,
            "SEXTANT_LOG_FORMAT": "text",
            # Warnings and errors only: a failed test shows the tail of this log.
            "SEXTANT_LOG_LEVEL": "WARNING",
            "SEXTANT_SCHEDULER_HEARTBEAT_INTERVAL": "0.5",
        }
    )
    env.update({f"SEXTANT_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def run_cli(env: Mapping[str, str], cwd: Path, *args: str) -> str:
    """Run `sextant ARGS` (as `python -m app.cli`) to completion and return its output."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"sextant {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
            f"{result.stderr}"
        )
    return result.stdout


class Database(NamedTuple):
    """A database on the test PostgreSQL server."""

    name: str
    url: str


def prepare_database(postgres: PostgresServer, prefix: str, cwd: Path) -> Database:
    """A new PostgreSQL database, migrated by `sextant db upgrade`."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name)
    run_cli(sextant_env(url), cwd, "db", "upgrade")
    return Database(name, url)


def admin_token(env: Mapping[str, str], cwd: Path) -> str:
    """A system-admin token from `sextant tokens create` (the token is the last line)."""
    return run_cli(env, cwd, "tokens", "create", "--role", "system-admin").strip().splitlines()[-1]


@dataclass(kw_only=True)
class SextantServer(Component):
    """One `sextant serve` process on 127.0.0.1."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """/readyz: its status code and body."""
        response = httpx.get(f"{self.url}/readyz", timeout=5)
        return response.status_code, response.json()

    def job_runs(self, job: str) -> float:
        """How many runs of the periodic job `job` this process has finished (its /metrics)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        pattern = rf'^sextant_job_duration_seconds_count{{job="{re.escape(job)}"}} (\S+)$'
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


def start_sextant(
    dirs: ComponentDirs, env: Mapping[str, str], name: str = "sextant"
) -> SextantServer:
    """Start `sextant serve` on a free port and wait until /readyz says ready."""
    home = dirs.make(name)
    port = free_port()
    process = ManagedProcess(
        name,
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        log_path=home / "sextant.log",
        ready=http_ok(f"http://{HOST}:{port}/readyz"),
        env={**env, "SEXTANT_SERVER_PUBLIC_URL": f"http://{HOST}:{port}"},
        # Not the repository: a developer's .env there must not configure the process under test.
        cwd=home,
        start_timeout=60,
    )
    process.start()
    return SextantServer(process=process, host=HOST, port=port)


def api(server: SextantServer, token: str) -> httpx.Client:
    """An HTTP client for the server's API, authenticated with `token`."""
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def register(
    client: httpx.Client,
    workspace: str,
    deployment: str,
    deployment_recipients: Sequence[str],
    workspace_recipients: Sequence[str] = (),
) -> None:
    """Create the workspace, its deployment and their alert recipients through the API."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/workspaces", {"name": workspace}),
        (f"/api/v1/workspaces/{workspace}/deployments", {"name": deployment}),
    ]
    calls += [
        (f"/api/v1/deployments/{deployment}/alert-recipients", {"email": address})
        for address in deployment_recipients
    ]
    calls += [
        (f"/api/v1/workspaces/{workspace}/alert-recipients", {"email": address})
        for address in workspace_recipients
    ]
    for path, body in calls:
        response = client.post(path, json=body)
        assert response.status_code == 201, f"POST {path}: {response.text}"


def lower_heartbeat_threshold(client: httpx.Client, deployment: str, seconds: float) -> None:
    """Override the heartbeat rule for `deployment`: fire after `seconds`, with `for: 0s`."""
    response = client.patch(
        f"/api/v1/deployments/{deployment}/alert-rules/{HEARTBEAT_RULE}",
        json={"threshold": seconds, "for": "0s"},
    )
    assert response.status_code == 200, response.text


# --- metrics: a heartbeat in a real Prometheus -------------------------------------------------


def identity_prometheus_config(
    folder: Path, exporter: StatsdExporter, workspace: str, deployment: str
) -> str:
    """prometheus.yml scraping `exporter` every second through a file_sd file Sextant renders.

    The file is what Sextant's Prometheus target writes for a deployment whose exporter address
    the runtime knows: the target with `workspace` and `deployment` labels.
    """
    file_sd_dir = folder / "file_sd"
    file_sd_dir.mkdir(parents=True, exist_ok=True)
    view = DeploymentView(
        name=deployment,
        workspace=workspace,
        executor="CeleryExecutor",
        airflow_version="3.0.0",
        components={},
        generation=1,
        metrics_address=f"{exporter.host}:{exporter.web_port}",
    )
    (file_sd_dir / file_sd_name(deployment)).write_text(render_file_sd(view))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [file_sd_scrape_config(file_sd_dir)],
    }
    return yaml.safe_dump(config, sort_keys=False)


def heartbeat_series(prometheus: PrometheusServer, deployment: str) -> list[dict[str, Any]]:
    """The deployment's scheduler heartbeat series as Prometheus has them now."""
    return prometheus.query(f'airflow_scheduler_heartbeat{{deployment="{deployment}"}}')


def stalled_heartbeat(
    exporter: StatsdExporter,
    start_prometheus: Callable[[str], PrometheusServer],
    folder: Path,
    workspace: str,
    deployment: str,
) -> PrometheusServer:
    """A Prometheus whose only heartbeat series, for `deployment`, never increases.

    The exporter gets a few increments *before* Prometheus first scrapes it, so Prometheus never
    sees the counter rise: the rule's measure is then the time since the series was first seen,
    which only grows (no flapping around a low threshold).
    """
    exporter.send(*[HEARTBEAT_LINE] * 3)
    wait_until(
        lambda: re.search(r"^airflow_scheduler_heartbeat 3$", exporter.metrics(), re.MULTILINE),
        10,
        "the exporter counted three heartbeats",
    )
    prometheus = start_prometheus(
        identity_prometheus_config(folder, exporter, workspace, deployment)
    )
    wait_until(
        lambda: heartbeat_series(prometheus, deployment), 20, "Prometheus scraped the heartbeat"
    )
    return prometheus


# --- the mailbox -----------------------------------------------------------------------------


def per_recipient(messages: list[EmailMessage]) -> collections.Counter[str]:
    """How many messages each envelope recipient got."""
    return collections.Counter(str(m["X-Envelope-To"]) for m in messages)
