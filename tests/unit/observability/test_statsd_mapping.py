"""The committed StatsD mapping keeps the official chart's mappings (names and labels), fixed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from app.observability.statsd import mapping_text

# The chart's 21 mappings (chart/files/statsd-mappings.yml) as this file must carry them:
# (match, Prometheus name, label names). Rows marked "fixed" differ from the chart on purpose.
CHART = [
    ("airflow.dagrun.dependency-check.*", "airflow_dagrun_dependency_check", {"dag_id"}),  # fixed
    (r"^airflow\.operator_successes_(.+)$", "airflow_operator_successes", {"operator"}),
    (r"^airflow\.operator_failures_(.+)$", "airflow_operator_failures", {"operator"}),
    ("airflow.scheduler_heartbeat", "airflow_scheduler_heartbeat", {"type"}),
    ("airflow.dag_processor_heartbeat", "airflow_dag_processor_heartbeat", {"type"}),
    ("airflow.dag.*.*.duration", "airflow_task_duration", {"dag_id", "task_id"}),
    ("airflow.dagrun.duration.success.*", "airflow_dagrun_duration", {"dag_id"}),
    ("airflow.dagrun.duration.failed.*", "airflow_dagrun_failed", {"dag_id"}),
    ("airflow.dagrun.schedule_delay.*", "airflow_dagrun_schedule_delay", {"dag_id"}),
    # fixed: the chart maps the 1.10 name dag_processing.last_runtime.*
    (
        "airflow.dag_processing.last_duration.*.*",
        "airflow_dag_processing_last_duration",
        {"bundle", "dag_file"},
    ),
    (
        "airflow.dag_processing.last_run.seconds_ago.*",
        "airflow_dag_processing_last_run_seconds_ago",
        {"dag_file"},
    ),
    ("airflow.pool.open_slots.*", "airflow_pool_open_slots", {"pool"}),
    # fixed: pool.used_slots is no longer emitted; running and queued slots replace it
    ("airflow.pool.running_slots.*", "airflow_pool_running_slots", {"pool"}),
    ("airflow.pool.starving_tasks.*", "airflow_pool_starving_tasks", {"pool"}),
    # fixed: no executor label, both the bare and the suffixed name feed one series
    ("airflow.executor.open_slots.*", "airflow_executor_open_slots", set()),
    ("airflow.executor.queued_tasks.*", "airflow_executor_queued_tasks", set()),
    ("airflow.executor.running_tasks.*", "airflow_executor_running_tasks", set()),
    ("airflow.ti.running.*.*.*", "airflow_ti_running", {"queue", "dag_id", "task_id"}),
    ("airflow.ti.queued.*.*.*", "airflow_ti_queued", {"queue", "dag_id", "task_id"}),
    ("airflow.ti.scheduled.*.*.*", "airflow_ti_scheduled", {"queue", "dag_id", "task_id"}),
    ("airflow.ti.deferred.*.*.*", "airflow_ti_deferred", {"queue", "dag_id", "task_id"}),
]


def mappings() -> list[dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load(mapping_text())
    return list(document["mappings"])


def by_match() -> dict[str, dict[str, Any]]:
    return {rule["match"]: rule for rule in mappings()}


@pytest.mark.parametrize(("match", "name", "labels"), CHART, ids=[row[1] for row in CHART])
def test_chart_mapping_is_kept(match: str, name: str, labels: set[str]) -> None:
    rule = by_match()[match]
    assert rule["name"] == name
    assert set(rule.get("labels") or {}) == labels


def test_chart_bugs_are_gone() -> None:
    matches = by_match()
    assert "airflow.dagrun.dependency-check.*.*" not in matches
    assert "airflow.dag_processing.last_runtime.*" not in matches
    assert "airflow.pool.used_slots.*" not in matches


def test_bare_names_come_before_the_wildcard_rules_that_extend_them() -> None:
    # statsd_exporter's glob matcher never reaches an exact rule listed after a longer
    # wildcard rule on the same path (found by the replay test).
    order = [rule["match"] for rule in mappings() if rule.get("match_type") != "regex"]
    for index, match in enumerate(order):
        if "*" in match:
            continue
        for earlier in order[:index]:
            assert not earlier.startswith(match + "."), (match, earlier)


def test_no_rule_sets_help() -> None:
    # Two help texts for one name make statsd_exporter fail the whole scrape.
    assert not [rule["match"] for rule in mappings() if "help" in rule]


def test_timers_default_to_histograms_and_nothing_expires_by_default() -> None:
    document: dict[str, Any] = yaml.safe_load(mapping_text())
    assert document["defaults"]["observer_type"] == "histogram"
    assert document["defaults"]["ttl"] == 0
