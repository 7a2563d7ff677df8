"""Feeding Airflow's executor gauges to the real exporters, and waiting for Prometheus."""

from __future__ import annotations

import asyncio

from tests.harness.components import PrometheusServer, StatsdExporter
from tests.integration.alerting._sextant import wait_until


def load(exporter: StatsdExporter, queued: int, running: int) -> None:
    exporter.send(
        f"airflow.executor.queued_tasks:{queued}|g", f"airflow.executor.running_tasks:{running}|g"
    )


def seen(prometheus: PrometheusServer, deployment: str, queued: int, running: int) -> bool:
    def value(metric: str) -> float | None:
        found = prometheus.query(f'{metric}{{deployment="{deployment}"}}')
        return float(found[0]["value"][1]) if found else None

    return (
        value("airflow_executor_queued_tasks") == queued
        and value("airflow_executor_running_tasks") == running
    )


async def until_seen(prometheus: PrometheusServer, deployment: str, q: int, r: int) -> None:
    await asyncio.to_thread(
        wait_until, lambda: seen(prometheus, deployment, q, r), 30,
        f"Prometheus has {deployment}'s load {q}+{r}",
    )  # fmt: skip
