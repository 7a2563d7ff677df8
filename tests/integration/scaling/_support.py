"""Feeding Airflow's executor gauges and Flower's worker gauges to the real exporters, and
waiting for Prometheus."""

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


def flower_reports(
    exporter: StatsdExporter, worker: str, running: int, online: bool = True
) -> None:
    """What Flower exports for a Celery worker after its last heartbeat (or goodbye)."""
    exporter.send(
        f"flower_worker_number_of_currently_executing_tasks:{running}|g|#worker:{worker}",
        f"flower_worker_online:{int(online)}|g|#worker:{worker}",
    )


async def until_flower_seen(prometheus: PrometheusServer, deployment: str, workers: int) -> None:
    """Wait until Prometheus has both of Flower's gauges for `workers` workers of a deployment."""

    def seen() -> bool:
        return all(
            len(prometheus.query(f'{metric}{{deployment="{deployment}"}}')) == workers
            for metric in ("flower_worker_number_of_currently_executing_tasks",
                           "flower_worker_online")
        )  # fmt: skip

    await asyncio.to_thread(wait_until, seen, 30, f"Prometheus has {deployment}'s Flower gauges")
