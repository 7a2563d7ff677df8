"""AirflowTasksQueuedWorkersAtMax from the autoscaler's own numbers, to an e-mail.

A real `sextant serve` (PostgreSQL) exports `sextant_scaling_current_workers` and
`sextant_scaling_max_workers` on /metrics; a real Prometheus scrapes it and the deployment's real
statsd_exporter (executor gauges from StatsD lines); Sextant's evaluator asks Prometheus for the
rule and e-mails the deployment's recipient through a real SMTP server. The deployment already
runs its maximum of workers and tasks stay queued, so the rule (its `for` lowered to 0 s by a
per-deployment override) fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml

from tests.harness.components import ComponentDirs, PostgresServer, PrometheusServer, StatsdExporter
from tests.harness.plugin import ComponentFactory
from tests.harness.smtp import SmtpSink
from tests.integration.alerting._sextant import (
    SextantServer,
    admin_token,
    api,
    prepare_database,
    sextant_env,
    start_sextant,
    wait_until,
)
from tests.integration.scaling._support import load

RULE = "AirflowTasksQueuedWorkersAtMax"


@pytest.fixture
def sextant_factory(
    component_dirs: ComponentDirs,
) -> Iterator[ComponentFactory[..., SextantServer]]:
    factory = ComponentFactory(start_sextant, component_dirs)
    yield factory
    factory.stop_all()


def scrape_config(exporter: StatsdExporter, sextant: SextantServer | None) -> str:
    jobs = [
        {
            "job_name": "airflow",
            "static_configs": [
                {
                    "targets": [f"{exporter.host}:{exporter.web_port}"],
                    "labels": {"deployment": "etl", "workspace": "data-eng"},
                }
            ],
        }
    ]
    if sextant is not None:
        jobs.append(
            {"job_name": "sextant", "static_configs": [{"targets": [f"127.0.0.1:{sextant.port}"]}]}
        )
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}}
    return yaml.safe_dump({**config, "scrape_configs": jobs})


def test_queued_tasks_at_max_workers_are_e_mailed(
    postgres_server: PostgresServer,
    exporters: dict[str, StatsdExporter],
    prometheus_factory: Callable[..., PrometheusServer],
    smtp_sink: SmtpSink,
    sextant_factory: ComponentFactory[..., SextantServer],
    tmp_path: Path,
) -> None:
    exporter = exporters["etl"]
    prometheus = prometheus_factory(config=scrape_config(exporter, None))
    database = prepare_database(postgres_server, "sextant_at_max", tmp_path)
    env = sextant_env(
        database.url,
        PROMETHEUS_URL=prometheus.url,
        SMTP_HOST=smtp_sink.host,
        SMTP_PORT=smtp_sink.port,
        SMTP_FROM="sextant@example.com",
        ALERTS_INTERVAL=1,
        ALERTS_DELIVERY_INTERVAL=0.5,
        SCALING_INTERVAL=1,
    )
    sextant = sextant_factory(env, "sextant")
    prometheus.config_path.write_text(scrape_config(exporter, sextant))
    prometheus.reload()
    token = admin_token(env, tmp_path)
    with api(sextant, token) as client:
        for path, body in (
            ("/api/v1/workspaces", {"name": "data-eng"}),
            ("/api/v1/workspaces/data-eng/deployments", {
                "name": "etl", "worker_concurrency": 4, "min_workers": 1, "max_workers": 2,
                "components": {"workers": {"replicas": 2}},
            }),
            ("/api/v1/deployments/etl/alert-recipients", {"email": "oncall@example.com"}),
        ):  # fmt: skip
            response = client.post(path, json=body)
            assert response.status_code == 201, response.text
        response = client.put("/api/v1/deployments/etl/scaling-policy", json={"enabled": True})
        assert response.status_code == 200, response.text
        response = client.patch(f"/api/v1/deployments/etl/alert-rules/{RULE}", json={"for": "0s"})
        assert response.status_code == 200, response.text

        # 20 tasks queued on 2 workers of 4 slots: the autoscaler would want 5, the maximum is 2.
        load(exporter, 20, 8)

        def at_max_in_prometheus() -> bool:
            current = prometheus.query('sextant_scaling_current_workers{deployment="etl"}')
            maximum = prometheus.query('sextant_scaling_max_workers{deployment="etl"}')
            return (
                bool(current and maximum)
                and current[0]["value"][1] == "2" == maximum[0]["value"][1]
            )

        wait_until(at_max_in_prometheus, 30, "Prometheus scraped Sextant's scaling gauges")

        def mailed() -> list[EmailMessage]:
            return [m for m in smtp_sink.messages() if m["X-Sextant-Rule"] == RULE]

        try:
            messages = wait_until(mailed, 60, f"an e-mail about {RULE}")
        except AssertionError as exc:
            alerts = client.get("/api/v1/deployments/etl/alerts").json()
            sent = client.get("/api/v1/deployments/etl/notifications").json()["items"]
            files = sorted(p.name for p in smtp_sink.maildir.iterdir())
            raise AssertionError(
                f"{exc}\nalerts: {alerts}\nnotifications: {sent}\nmaildir "
                f"{smtp_sink.maildir}: {files}; {[m['Subject'] for m in smtp_sink.messages()]}"
            ) from None
        [message] = messages
        assert (message["To"], message["X-Sextant-Deployment"]) == ("oncall@example.com", "etl")
        assert str(message["Subject"]).startswith("[FIRING] Tasks queued workers at max 20")
        decisions = client.get("/api/v1/deployments/etl/scaling-decisions").json()["items"]
        assert decisions[0]["recommended"] == 2  # ceil(28 / 4) = 7, capped at the maximum
        assert decisions[0]["queued"] == 20
