"""Sextant's Grafana dashboards, built from Python so that all of them stay consistent.

Six dashboards (fleet overview, deployment overview, scheduler, workers and capacity, DAG
processing, database/PgBouncer) share one shape: a `datasource` variable, query variables
`workspace` and `deployment` on `label_values`, and PromQL that filters every Airflow and
PgBouncer series by `workspace=~"$workspace", deployment=~"$deployment"` (labels Prometheus adds
at scrape). Sextant's own scaling metrics carry `deployment` only (Sextant is one scrape target
for the whole fleet); deployment names are unique in the installation, and `$deployment` only
offers the selected workspaces' deployments, so filtering them by deployment is enough.

Data source: a `datasource` variable of type prometheus whose default is the data source Sextant
provisions (uid `sextant-prometheus`). Provisioned dashboards therefore work with no selection,
and the committed JSON can be imported into any Grafana, where the variable falls back to the
default Prometheus and users can pick another one.

Template and instance: `dashboards/*.json` are the workspace-independent templates (uid
`sextant-<key>`, variable defaults "All"). Each workspace gets an instance in its own folder,
with a uid derived from workspace and dashboard, the workspace in the title and as the variable
default, and dashboard links restricted to that workspace's dashboards.

Everything here is pure; `render_json` gives deterministic text (sorted keys, fixed panel order)
so the committed files can be compared with what the code renders, and a content hash of a
workspace's dashboards only changes when a dashboard does.

Regenerate the committed templates with `python -m app.observability.dashboards --write`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x; newer Grafanas migrate it on load
DATASOURCE_UID = "sextant-prometheus"
DATASOURCE_NAME = "Sextant Prometheus"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ("airflow", "sextant")
DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"

# Every Airflow and PgBouncer series carries these labels, added at scrape.
SELECTOR = 'workspace=~"$workspace", deployment=~"$deployment"'
# Sextant's own metrics only carry the deployment.
SEXTANT_SELECTOR = 'deployment=~"$deployment"'
# The series every running deployment has; the variables list what it has seen.
VARIABLE_METRIC = "airflow_scheduler_heartbeat"


# -- the model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Threshold:
    """A colour from a value upwards (`value=None` is the base colour)."""

    color: str
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel: a kind (timeseries or stat), its queries, unit and thresholds."""

    title: str
    queries: tuple[Query, ...]
    description: str
    kind: str = "timeseries"
    unit: str = "short"
    thresholds: tuple[Threshold, ...] = ()
    width: int = 0
    decimals: int | None = None
    min: float | None = 0
    stack: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """A titled row of panels."""

    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    """What one dashboard shows; `key` names its file and feeds its uids."""

    key: str
    title: str
    description: str
    rows: tuple[Row, ...]
    extra_tags: tuple[str, ...] = field(default=())


def sel(*extra: str) -> str:
    """The workspace/deployment label matchers, plus any `extra` ones."""
    return "{" + ", ".join((SELECTOR, *extra)) + "}"


def sextant_sel(*extra: str) -> str:
    """The deployment matcher for Sextant's own metrics."""
    return "{" + ", ".join((SEXTANT_SELECTOR, *extra)) + "}"


def quantile(q: float, metric: str, by: str) -> str:
    """PromQL for the q-quantile of a histogram per `by` over the panel's rate interval."""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({metric}_bucket{sel()}[$__rate_interval])))"
    )


def per_minute(metric: str, by: str) -> str:
    """PromQL for a counter's per-minute rate summed per `by`."""
    return f"sum by ({by}) (rate({metric}{sel()}[$__rate_interval])) * 60"


def ts(title: str, description: str, *queries: Query, **options: Any) -> Panel:
    """A time series panel."""
    return Panel(title, tuple(queries), description, "timeseries", **options)


def stat(title: str, description: str, *queries: Query, **options: Any) -> Panel:
    """A single-value panel."""
    return Panel(title, tuple(queries), description, "stat", **options)


GOOD_ABOVE_ONE = (Threshold("red"), Threshold("green", 1))
# AirflowSchedulerLagHigh fires when the p95 schedule delay exceeds 120 s.
LAG = (Threshold("green"), Threshold("orange", 60), Threshold("red", 120))
BAD_FROM_ONE = (Threshold("green"), Threshold("red", 1))
WARN_FROM_ONE = (Threshold("green"), Threshold("orange", 1))


# -- the dashboards ---------------------------------------------------------------------------


def _fleet() -> DashboardSpec:
    return DashboardSpec(
        key="fleet-overview",
        title="Airflow fleet overview",
        description="Every deployment of the selected workspaces at a glance.",
        rows=(
            Row(
                "Fleet health",
                (
                    stat(
                        "Deployments reporting",
                        "Deployments whose scheduler heartbeat reached Prometheus.",
                        Query(f"count(count by (deployment) ({VARIABLE_METRIC}{sel()}))"),
                        decimals=0,
                        width=6,
                    ),
                    stat(
                        "Schedulers not heartbeating",
                        "Deployments with no scheduler heartbeat in the last 3 minutes.",
                        Query(
                            "count(sum by (deployment) "
                            f"(rate(airflow_scheduler_heartbeat{sel()}[3m])) == 0) or vector(0)"
                        ),
                        thresholds=BAD_FROM_ONE,
                        decimals=0,
                        width=6,
                    ),
                    stat(
                        "Deployments with DAG import errors",
                        "Deployments where at least one DAG file fails to parse.",
                        Query(
                            "count(max by (deployment) "
                            f"(airflow_dag_processing_import_errors{sel()}) > 0) or vector(0)"
                        ),
                        thresholds=BAD_FROM_ONE,
                        decimals=0,
                        width=6,
                    ),
                    stat(
                        "Failed task instances",
                        "Task instances that failed over the dashboard's time range.",
                        Query(f"sum(increase(airflow_ti_failures{sel()}[$__range]))"),
                        thresholds=WARN_FROM_ONE,
                        decimals=0,
                        width=6,
                    ),
                ),
            ),
            Row(
                "By deployment",
                (
                    ts(
                        "Scheduler heartbeats",
                        "Heartbeats per minute; about 12 per scheduler at the default 5 s.",
                        Query(
                            per_minute("airflow_scheduler_heartbeat", "deployment"),
                            "{{deployment}}",
                        ),
                        unit="cpm",
                        thresholds=GOOD_ABOVE_ONE,
                    ),
                    ts(
                        "Schedule delay (p95)",
                        "How late scheduled DAG runs start: 95th percentile per deployment.",
                        Query(
                            quantile(0.95, "airflow_dagrun_schedule_delay", "deployment"),
                            "{{deployment}}",
                        ),
                        unit="s",
                        thresholds=LAG,
                    ),
                    ts(
                        "Tasks queued in the executor",
                        "Tasks waiting for a worker slot.",
                        Query(
                            f"max by (deployment) (airflow_executor_queued_tasks{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                    ),
                    ts(
                        "Tasks running",
                        "Tasks the executor is running.",
                        Query(
                            f"max by (deployment) (airflow_executor_running_tasks{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                    ),
                    ts(
                        "Failed task instances",
                        "Failures per interval.",
                        Query(
                            "sum by (deployment) "
                            f"(increase(airflow_ti_failures{sel()}[$__rate_interval]))",
                            "{{deployment}}",
                        ),
                        decimals=0,
                    ),
                    ts(
                        "Celery workers",
                        "Workers running now, as Sextant's scaler sees them.",
                        Query(f"sextant_scaling_current_workers{sextant_sel()}", "{{deployment}}"),
                        decimals=0,
                    ),
                ),
            ),
        ),
    )


def _deployment() -> DashboardSpec:
    return DashboardSpec(
        key="deployment-overview",
        title="Airflow deployment overview",
        description="One deployment's components, work, lag and capacity.",
        rows=(
            Row(
                "Components",
                (
                    stat(
                        "Scheduler heartbeats / min",
                        "Red when the scheduler stopped heartbeating.",
                        Query(
                            f"sum(rate(airflow_scheduler_heartbeat{sel()}[$__rate_interval])) * 60"
                        ),
                        unit="cpm",
                        thresholds=GOOD_ABOVE_ONE,
                        width=4,
                    ),
                    stat(
                        "DAG processor heartbeats / min",
                        "Red when the DAG processor stopped heartbeating.",
                        Query(
                            "sum(rate(airflow_dag_processor_heartbeat"
                            f"{sel()}[$__rate_interval])) * 60"
                        ),
                        unit="cpm",
                        thresholds=GOOD_ABOVE_ONE,
                        width=4,
                    ),
                    stat(
                        "Triggerer heartbeats / min",
                        "Red when the triggerer stopped heartbeating.",
                        Query(
                            f"sum(rate(airflow_triggerer_heartbeat{sel()}[$__rate_interval])) * 60"
                        ),
                        unit="cpm",
                        thresholds=GOOD_ABOVE_ONE,
                        width=4,
                    ),
                    stat(
                        "DAG import errors",
                        "DAG files that currently fail to parse.",
                        Query(f"sum(airflow_dag_processing_import_errors{sel()})"),
                        thresholds=BAD_FROM_ONE,
                        decimals=0,
                        width=4,
                    ),
                    stat(
                        "DAG runs running",
                        "DAGs whose latest run is running.",
                        Query(f"sum(airflow_scheduler_dagruns_running{sel()})"),
                        decimals=0,
                        width=4,
                    ),
                    stat(
                        "PgBouncer clients waiting",
                        "Clients waiting for a server connection to the metadata database.",
                        Query(f"sum(pgbouncer_pools_client_waiting_connections{sel()})"),
                        thresholds=(
                            Threshold("green"),
                            Threshold("orange", 1),
                            Threshold("red", 5),
                        ),
                        decimals=0,
                        width=4,
                    ),
                ),
            ),
            Row(
                "Work",
                (
                    ts(
                        "Task instances by state",
                        "Task instances scheduled, queued, running and deferred.",
                        Query(f"sum(airflow_ti_scheduled{sel()})", "scheduled"),
                        Query(f"sum(airflow_ti_queued{sel()})", "queued"),
                        Query(f"sum(airflow_ti_running{sel()})", "running"),
                        Query(f"sum(airflow_ti_deferred{sel()})", "deferred"),
                        decimals=0,
                    ),
                    ts(
                        "Finished task instances by state",
                        "Task instances finished per interval, by final state.",
                        Query(
                            "sum by (state) "
                            f"(increase(airflow_ti_finish{sel()}[$__rate_interval]))",
                            "{{state}}",
                        ),
                        decimals=0,
                        stack=True,
                    ),
                    ts(
                        "Schedule delay",
                        "How late scheduled DAG runs start.",
                        Query(
                            quantile(0.5, "airflow_dagrun_schedule_delay", "deployment"),
                            "{{deployment}} p50",
                        ),
                        Query(
                            quantile(0.95, "airflow_dagrun_schedule_delay", "deployment"),
                            "{{deployment}} p95",
                        ),
                        Query(
                            quantile(0.99, "airflow_dagrun_schedule_delay", "deployment"),
                            "{{deployment}} p99",
                        ),
                        unit="s",
                        thresholds=LAG,
                    ),
                    ts(
                        "DAG run duration (p95)",
                        "Wall time of successful DAG runs, per DAG.",
                        Query(
                            quantile(0.95, "airflow_dagrun_duration", "deployment, dag_id"),
                            "{{deployment}} {{dag_id}}",
                        ),
                        unit="s",
                    ),
                ),
            ),
            Row(
                "Capacity",
                (
                    ts(
                        "Executor slots",
                        "Open slots ([core] parallelism minus running), queued and running tasks.",
                        Query(f"max(airflow_executor_open_slots{sel()})", "open"),
                        Query(f"max(airflow_executor_queued_tasks{sel()})", "queued"),
                        Query(f"max(airflow_executor_running_tasks{sel()})", "running"),
                        decimals=0,
                    ),
                    ts(
                        "Celery workers",
                        "Workers Sextant wants, has, and may have at most.",
                        Query(f"sum(sextant_scaling_desired_workers{sextant_sel()})", "desired"),
                        Query(f"sum(sextant_scaling_current_workers{sextant_sel()})", "current"),
                        Query(f"sum(sextant_scaling_max_workers{sextant_sel()})", "max"),
                        decimals=0,
                    ),
                ),
            ),
        ),
    )


def _scheduler() -> DashboardSpec:
    return DashboardSpec(
        key="scheduler",
        title="Airflow scheduler",
        description="Is the scheduler alive, how long its loop takes, and how late work starts.",
        rows=(
            Row(
                "Liveness and loop",
                (
                    ts(
                        "Scheduler heartbeats",
                        "Heartbeats per minute; about 12 per scheduler at the default 5 s.",
                        Query(
                            per_minute("airflow_scheduler_heartbeat", "deployment"),
                            "{{deployment}}",
                        ),
                        unit="cpm",
                        thresholds=GOOD_ABOVE_ONE,
                        width=8,
                    ),
                    ts(
                        "Scheduler loop duration (p95)",
                        "Time one scheduler loop takes.",
                        Query(
                            quantile(
                                0.95, "airflow_scheduler_scheduler_loop_duration", "deployment"
                            ),
                            "{{deployment}}",
                        ),
                        unit="s",
                        width=8,
                    ),
                    ts(
                        "Critical section duration (p95)",
                        "Time spent holding the critical section that only one scheduler may hold.",
                        Query(
                            quantile(
                                0.95, "airflow_scheduler_critical_section_duration", "deployment"
                            ),
                            "{{deployment}}",
                        ),
                        unit="s",
                        width=8,
                    ),
                ),
            ),
            Row(
                "Lag",
                (
                    ts(
                        "Schedule delay by DAG (p95)",
                        "How late scheduled DAG runs start, per DAG.",
                        Query(
                            quantile(0.95, "airflow_dagrun_schedule_delay", "deployment, dag_id"),
                            "{{deployment}} {{dag_id}}",
                        ),
                        unit="s",
                        thresholds=LAG,
                        width=8,
                    ),
                    ts(
                        "First task scheduling delay by DAG (p95)",
                        "From a run's expected start to its first task's start.",
                        Query(
                            quantile(
                                0.95,
                                "airflow_dagrun_first_task_scheduling_delay",
                                "deployment, dag_id",
                            ),
                            "{{deployment}} {{dag_id}}",
                        ),
                        unit="s",
                        width=8,
                    ),
                    ts(
                        "Time tasks wait in scheduled (p95)",
                        "From scheduled to queued: scheduler lag per task instance.",
                        Query(
                            quantile(0.95, "airflow_task_scheduled_duration", "deployment, dag_id"),
                            "{{deployment}} {{dag_id}}",
                        ),
                        unit="s",
                        width=8,
                    ),
                ),
            ),
            Row(
                "Throughput",
                (
                    ts(
                        "Tasks made executable",
                        "Task instances the last loop queued, after pool and priority limits.",
                        Query(
                            f"sum by (deployment) (airflow_scheduler_tasks_executable{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Starving tasks",
                        "Task instances that cannot be scheduled because no pool slot is open.",
                        Query(
                            f"sum by (deployment) (airflow_scheduler_tasks_starving{sel()})",
                            "{{deployment}}",
                        ),
                        thresholds=WARN_FROM_ONE,
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "DAG runs running",
                        "DAGs whose latest run is running.",
                        Query(
                            f"sum by (deployment) (airflow_scheduler_dagruns_running{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
        ),
    )


def _workers() -> DashboardSpec:
    return DashboardSpec(
        key="workers-capacity",
        title="Airflow workers and capacity",
        description="Sextant's worker scaling, executor and pool slots, queues and the triggerer.",
        rows=(
            Row(
                "Sextant worker scaling",
                (
                    ts(
                        "Workers: desired, current and max",
                        "What Sextant's scaler wants, what runs, and the policy's maximum.",
                        Query(
                            f"sextant_scaling_desired_workers{sextant_sel()}",
                            "{{deployment}} desired",
                        ),
                        Query(
                            f"sextant_scaling_current_workers{sextant_sel()}",
                            "{{deployment}} current",
                        ),
                        Query(f"sextant_scaling_max_workers{sextant_sel()}", "{{deployment}} max"),
                        decimals=0,
                    ),
                    ts(
                        "Scaling decisions by reason",
                        "Decisions taken per interval, by the reason recorded with each.",
                        Query(
                            "sum by (deployment, reason) (increase(sextant_scaling_decisions_total"
                            f"{sextant_sel()}[$__rate_interval]))",
                            "{{deployment}} {{reason}}",
                        ),
                        decimals=0,
                        stack=True,
                    ),
                ),
            ),
            Row(
                "Executor and queues",
                (
                    ts(
                        "Executor open slots",
                        "Free executor slots: [core] parallelism minus running tasks.",
                        Query(
                            f"max by (deployment) (airflow_executor_open_slots{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Queued task instances by queue",
                        "Task instances waiting for a worker, per Celery queue.",
                        Query(
                            f"sum by (deployment, queue) (airflow_ti_queued{sel()})",
                            "{{deployment}} {{queue}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Running task instances by queue",
                        "Task instances running, per Celery queue.",
                        Query(
                            f"sum by (deployment, queue) (airflow_ti_running{sel()})",
                            "{{deployment}} {{queue}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
            Row(
                "Pools",
                (
                    ts(
                        "Open pool slots",
                        "Free slots per pool.",
                        Query(
                            f"sum by (deployment, pool) (airflow_pool_open_slots{sel()})",
                            "{{deployment}} {{pool}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Running and queued pool slots",
                        "Slots taken by running and by queued task instances, per pool.",
                        Query(
                            f"sum by (deployment, pool) (airflow_pool_running_slots{sel()})",
                            "{{deployment}} {{pool}} running",
                        ),
                        Query(
                            f"sum by (deployment, pool) (airflow_pool_queued_slots{sel()})",
                            "{{deployment}} {{pool}} queued",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Starving tasks by pool",
                        "Task instances that wait because their pool has no open slot.",
                        Query(
                            f"sum by (deployment, pool) (airflow_pool_starving_tasks{sel()})",
                            "{{deployment}} {{pool}}",
                        ),
                        thresholds=WARN_FROM_ONE,
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
            Row(
                "Triggerer",
                (
                    ts(
                        "Triggerer capacity left",
                        "Triggers that still fit: [triggerer] capacity minus running.",
                        Query(
                            f"sum by (deployment) (airflow_triggerer_capacity_left{sel()})",
                            "{{deployment}}",
                        ),
                        thresholds=(
                            Threshold("red"),
                            Threshold("orange", 50),
                            Threshold("green", 200),
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Triggers running",
                        "Triggers running, per triggerer host.",
                        Query(
                            f"sum by (deployment, hostname) (airflow_triggers_running{sel()})",
                            "{{deployment}} {{hostname}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Deferred task instances",
                        "Task instances handed over to the triggerer.",
                        Query(
                            f"sum by (deployment) (airflow_ti_deferred{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
            Row(
                "Tasks",
                (
                    ts(
                        "Task duration by DAG (p95)",
                        "How long task instances run, per DAG.",
                        Query(
                            quantile(0.95, "airflow_task_duration", "deployment, dag_id"),
                            "{{deployment}} {{dag_id}}",
                        ),
                        unit="s",
                    ),
                    ts(
                        "Failed task instances by DAG",
                        "Task instances that finished failed, per interval and DAG.",
                        Query(
                            "sum by (deployment, dag_id) (increase(airflow_ti_finish"
                            + sel('state="failed"')
                            + "[$__rate_interval]))",
                            "{{deployment}} {{dag_id}}",
                        ),
                        thresholds=WARN_FROM_ONE,
                        decimals=0,
                    ),
                ),
            ),
        ),
    )


def _dag_processing() -> DashboardSpec:
    return DashboardSpec(
        key="dag-processing",
        title="Airflow DAG processing",
        description="Whether DAG files parse, how long parsing takes and how fresh each file is.",
        rows=(
            Row(
                "Now",
                (
                    stat(
                        "DAG import errors",
                        "DAG files that currently fail to parse.",
                        Query(f"sum(airflow_dag_processing_import_errors{sel()})"),
                        thresholds=BAD_FROM_ONE,
                        decimals=0,
                        width=8,
                    ),
                    stat(
                        "DAG processor heartbeats / min",
                        "Red when the DAG processor stopped heartbeating.",
                        Query(
                            "sum(rate(airflow_dag_processor_heartbeat"
                            f"{sel()}[$__rate_interval])) * 60"
                        ),
                        unit="cpm",
                        thresholds=GOOD_ABOVE_ONE,
                        width=8,
                    ),
                    stat(
                        "DAGs in the DAG bag",
                        "DAGs found by the last parse.",
                        Query(f"sum(airflow_dagbag_size{sel()})"),
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
            Row(
                "Parsing",
                (
                    ts(
                        "DAG import errors",
                        "Files failing to parse, per deployment.",
                        Query(
                            f"max by (deployment) (airflow_dag_processing_import_errors{sel()})",
                            "{{deployment}}",
                        ),
                        thresholds=BAD_FROM_ONE,
                        decimals=0,
                    ),
                    ts(
                        "Total parse time",
                        "Seconds to parse the whole file queue once.",
                        Query(
                            f"max by (deployment) (airflow_dag_processing_total_parse_time{sel()})",
                            "{{deployment}}",
                        ),
                        unit="s",
                        thresholds=(
                            Threshold("green"),
                            Threshold("orange", 30),
                            Threshold("red", 60),
                        ),
                    ),
                    ts(
                        "Seconds since each file was parsed",
                        "A file not parsed for long means a stuck or overloaded DAG processor.",
                        Query(
                            "max by (deployment, dag_file) "
                            f"(airflow_dag_processing_last_run_seconds_ago{sel()})",
                            "{{deployment}} {{dag_file}}",
                        ),
                        unit="s",
                        thresholds=(
                            Threshold("green"),
                            Threshold("orange", 300),
                            Threshold("red", 900),
                        ),
                    ),
                    ts(
                        "File parse duration (p95)",
                        "How long parsing each file takes.",
                        Query(
                            quantile(
                                0.95, "airflow_dag_processing_last_duration", "deployment, dag_file"
                            ),
                            "{{deployment}} {{dag_file}}",
                        ),
                        unit="s",
                    ),
                    ts(
                        "Files waiting to be parsed",
                        "Length of the DAG processor's file queue.",
                        Query(
                            "max by (deployment) "
                            f"(airflow_dag_processing_file_path_queue_size{sel()})",
                            "{{deployment}}",
                        ),
                        decimals=0,
                    ),
                ),
            ),
        ),
    )


def _database() -> DashboardSpec:
    return DashboardSpec(
        key="database",
        title="Airflow database and PgBouncer",
        description="Metadata-database connections through each deployment's PgBouncer.",
        rows=(
            Row(
                "Now",
                (
                    stat(
                        "Clients waiting",
                        "Clients waiting for a server connection: the pool is too small.",
                        Query(f"sum(pgbouncer_pools_client_waiting_connections{sel()})"),
                        thresholds=(
                            Threshold("green"),
                            Threshold("orange", 1),
                            Threshold("red", 5),
                        ),
                        decimals=0,
                        width=8,
                    ),
                    stat(
                        "Active clients",
                        "Client connections linked to a server connection.",
                        Query(f"sum(pgbouncer_pools_client_active_connections{sel()})"),
                        decimals=0,
                        width=8,
                    ),
                    stat(
                        "Server connections in use",
                        "Connections from PgBouncer to PostgreSQL in use by a client.",
                        Query(f"sum(pgbouncer_pools_server_active_connections{sel()})"),
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
            Row(
                "Per database",
                (
                    ts(
                        "Clients waiting",
                        "Clients waiting for a server connection, per database.",
                        Query(
                            "sum by (deployment, database) "
                            f"(pgbouncer_pools_client_waiting_connections{sel()})",
                            "{{deployment}} {{database}}",
                        ),
                        thresholds=(
                            Threshold("green"),
                            Threshold("orange", 1),
                            Threshold("red", 5),
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Active clients",
                        "Client connections linked to a server connection, per database.",
                        Query(
                            "sum by (deployment, database) "
                            f"(pgbouncer_pools_client_active_connections{sel()})",
                            "{{deployment}} {{database}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                    ts(
                        "Server connections in use",
                        "Server connections in use, per database.",
                        Query(
                            "sum by (deployment, database) "
                            f"(pgbouncer_pools_server_active_connections{sel()})",
                            "{{deployment}} {{database}}",
                        ),
                        decimals=0,
                        width=8,
                    ),
                ),
            ),
        ),
    )


SPECS: tuple[DashboardSpec, ...] = (
    _fleet(),
    _deployment(),
    _scheduler(),
    _workers(),
    _dag_processing(),
    _database(),
)


# -- identities -------------------------------------------------------------------------------


def _digest(*parts: str, length: int = 10) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def template_uid(key: str) -> str:
    """The uid of the workspace-independent template of dashboard `key`."""
    return f"sextant-{key}"


def dashboard_uid(workspace: str, key: str) -> str:
    """The stable uid of dashboard `key` in `workspace` (Grafana allows at most 40 characters)."""
    return f"sx-{key[:16]}-{_digest(workspace, key, length=12)}"


def folder_uid(workspace: str) -> str:
    """The stable uid of the workspace's Grafana folder."""
    return f"sx-{workspace[:24]}-{_digest('folder', workspace)}"


def folder_title(workspace: str) -> str:
    """The title of the workspace's Grafana folder."""
    return f"Sextant · {workspace}"


def workspace_tag(workspace: str) -> str:
    """The tag that links a workspace's dashboards to each other."""
    return f"workspace-{workspace}"


# -- Grafana JSON -------------------------------------------------------------------------------


def _field_config(panel: Panel) -> dict[str, Any]:
    steps = panel.thresholds or (Threshold("green"),)
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
        "mappings": [],
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": step.color, "value": step.value} for step in steps],
        },
        "unit": panel.unit,
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if panel.stack else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stack else "none"},
            "thresholdsStyle": {"mode": "line" if panel.thresholds else "off"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    if panel.kind == "stat":
        return {
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    return {
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _panel_json(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    targets = [
        {
            "datasource": dict(DATASOURCE_REF),
            "editorMode": "code",
            "expr": query.expr,
            "instant": False,
            "legendFormat": query.legend or "__auto",
            "range": True,
            "refId": chr(ord("A") + index),
        }
        for index, query in enumerate(panel.queries)
    ]
    return {
        "datasource": dict(DATASOURCE_REF),
        "description": panel.description,
        "fieldConfig": _field_config(panel),
        "gridPos": grid,
        "id": panel_id,
        "options": _options(panel),
        "targets": targets,
        "title": panel.title,
        "type": panel.kind,
    }


def _panels(spec: DashboardSpec) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for row in spec.rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        next_id, y = next_id + 1, y + 1
        x, row_height = 0, 0
        for panel in row.panels:
            width = panel.width or 12
            height = 4 if panel.kind == "stat" else 8
            if x + width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, next_id, {"h": height, "w": width, "x": x, "y": y}))
            next_id, x, row_height = next_id + 1, x + width, max(row_height, height)
        y += row_height
    return panels


def _query_variable(
    name: str, label: str, query: str, current: Sequence[str] | None
) -> dict[str, Any]:
    if current is None:
        selected: dict[str, Any] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        selected = {"selected": True, "text": list(current), "value": list(current)}
    return {
        "current": selected,
        "datasource": dict(DATASOURCE_REF),
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def _templating(workspace: str | None) -> dict[str, Any]:
    datasource = {
        "current": {"selected": False, "text": DATASOURCE_NAME, "value": DATASOURCE_UID},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }
    return {
        "list": [
            datasource,
            _query_variable(
                "workspace",
                "Workspace",
                f"label_values({VARIABLE_METRIC}, workspace)",
                None if workspace is None else [workspace],
            ),
            _query_variable(
                "deployment",
                "Deployment",
                f'label_values({VARIABLE_METRIC}{{workspace=~"$workspace"}}, deployment)',
                None,
            ),
        ]
    }


def _dashboard(spec: DashboardSpec, workspace: str | None) -> dict[str, Any]:
    if workspace is None:
        uid, title, tags, link_tags = template_uid(spec.key), spec.title, [*TAGS], ["sextant"]
    else:
        uid = dashboard_uid(workspace, spec.key)
        title = f"{spec.title} · {workspace}"
        tags = [*TAGS, workspace_tag(workspace)]
        link_tags = [workspace_tag(workspace)]
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": spec.description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": True,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": link_tags,
                "targetBlank": False,
                "title": "Sextant dashboards",
                "type": "dashboards",
            }
        ],
        "panels": _panels(spec),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": sorted(tags),
        "templating": _templating(workspace),
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
    }


def template(spec: DashboardSpec) -> dict[str, Any]:
    """The workspace-independent dashboard, as committed in `dashboards/`."""
    return _dashboard(spec, None)


def instance(spec: DashboardSpec, workspace: str) -> dict[str, Any]:
    """The dashboard as provisioned into `workspace`'s folder."""
    return _dashboard(spec, workspace)


def instances(workspace: str) -> list[dict[str, Any]]:
    """Every dashboard of `workspace`, in a fixed order."""
    return [instance(spec, workspace) for spec in SPECS]


def render_json(value: Mapping[str, Any]) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def template_files() -> dict[str, str]:
    """File name -> text of every committed template."""
    return {f"{spec.key}.json": render_json(template(spec)) for spec in SPECS}


def prometheus_datasource(url: str) -> dict[str, Any]:
    """The Prometheus data source Sextant provisions in Grafana (what the dashboards default to)."""
    return {
        "access": "proxy",
        "isDefault": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
        "name": DATASOURCE_NAME,
        "type": "prometheus",
        "uid": DATASOURCE_UID,
        "url": url,
    }


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in a dashboard, in panel order (for `sextant lint`)."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard.get("panels", [])
        for target in panel.get("targets", [])
    ]


_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def metric_names(dashboard: Mapping[str, Any]) -> set[str]:
    """Every metric name a dashboard's queries select (histograms with their `_bucket`)."""
    return {name for _, expr in panel_queries(dashboard) for name in _METRIC.findall(expr)}


def write_templates(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every template into `directory`, removing stale Sextant files; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = template_files()
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def stale_templates(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of committed templates that differ from what the code renders (or are missing)."""
    files = template_files()
    present = {path.name for path in directory.glob("*.json")}
    stale = [
        name
        for name, text in files.items()
        if name not in present or (directory / name).read_text() != text
    ]
    return sorted(stale + sorted(present - set(files)))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.observability.dashboards [--write|--check] [--out DIR]`."""
    parser = argparse.ArgumentParser(description="Render Sextant's Grafana dashboard templates.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write the templates")
    mode.add_argument("--check", action="store_true", help="fail if the committed ones differ")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="folder [dashboards/]")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_templates(args.out):
            sys.stdout.write(f"{path}\n")
        return 0
    stale = stale_templates(args.out)
    for name in stale:
        sys.stdout.write(f"stale: {name}\n")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
