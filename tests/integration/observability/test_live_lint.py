"""`sextant lint` against a Prometheus fed by a real Airflow 3.3.2's recorded metrics.

The catalogue and the dashboards must read only series that exist, with the labels they group and
route by: zero findings. Rules of the kind Astronomer shipped (a metric the mapping never
produces, a `job="prometheus-k8s"` filter, grouping by a label nobody sets) must be found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.observability.lint import (
    Problem,
    Query,
    Source,
    dashboard_queries,
    lint_prometheus,
    rule_queries,
)
from app.observability.rules import catalogue, load_catalogue
from tests.harness.components import ComponentDirs, PrometheusServer
from tests.observability_replay import Replayed, replayed_capture


@pytest.fixture(scope="module")
def replayed(
    component_dirs: ComponentDirs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replayed]:
    """The capture replayed once for the whole module."""
    with replayed_capture(
        component_dirs, tmp_path_factory.mktemp("lint"), with_rules=False
    ) as result:
        yield result


async def test_every_rule_reads_series_that_exist_with_their_routing_labels(
    replayed: Replayed,
) -> None:
    report = await lint_prometheus(replayed.prometheus.url, rule_queries(catalogue()))
    assert [str(finding) for finding in report.findings] == []
    assert report.queries == len(catalogue().rules)
    # The capture has no PgBouncer exporter and no Sextant: those metrics are not checked.
    not_checked = {skipped.metric: skipped.source for skipped in report.skipped}
    assert not_checked == {
        "pgbouncer_pools_client_waiting_connections": Source.PGBOUNCER,
        "sextant_scaling_current_workers": Source.SEXTANT,
        "sextant_scaling_max_workers": Source.SEXTANT,
    }
    assert report.checked_sources == {Source.AIRFLOW, Source.PROMETHEUS}


async def test_every_dashboard_query_returns_data(replayed: Replayed) -> None:
    queries = dashboard_queries()
    if not queries:
        pytest.skip("no dashboards in dashboards/ yet")
    report = await lint_prometheus(replayed.prometheus.url, queries)
    assert [str(finding) for finding in report.findings] == []


DEAD_RULES = """\
groups:
  - name: astronomer-style
    rules:
      # Astronomer's AirflowTasksPendingIncreasing: its mapping never produced this metric.
      - alert: TasksPendingIncreasing
        expr: >-
          max_over_time(airflow_scheduler_tasks_pending[5m])
          - max_over_time(airflow_scheduler_tasks_pending[5m] offset 5m) > 0
        for: 30m
        labels: {severity: warning, scope: deployment}
        annotations: {summary: s, description: d, runbook_url: r}
      # The kube-prometheus mixin's filter on a Prometheus whose job is not called that.
      - alert: PrometheusNotIngestingSamples
        expr: >-
          rate(prometheus_tsdb_head_samples_appended_total{job="prometheus-k8s"}[5m]) <= 0
          or up{job="prometheus-k8s",namespace="monitoring"} == 0
        for: 10m
        labels: {severity: warning, scope: fleet}
        annotations: {summary: s, description: d, runbook_url: r}
      # Routed by a label the series do not carry (identity by `release`, not `deployment`).
      - alert: SchedulerUnhealthyByRelease
        expr: sum by (release) (rate(airflow_scheduler_heartbeat[1m])) == 0
        for: 6m
        labels: {severity: critical, scope: fleet}
        annotations: {summary: s, description: d, runbook_url: r}
      # The chart's pool.used_slots, no longer emitted by Airflow.
      - alert: PoolFull
        expr: max by (workspace, deployment, pool) (airflow_pool_used_slots) > 10
        for: 5m
        labels: {severity: warning, scope: deployment}
        annotations: {summary: s, description: d, runbook_url: r}
"""


async def test_astronomer_style_dead_rules_are_found(replayed: Replayed, tmp_path: Path) -> None:
    (tmp_path / "dead.rules.yml").write_text(DEAD_RULES)
    report = await lint_prometheus(replayed.prometheus.url, rule_queries(load_catalogue(tmp_path)))
    found = {(f.origin, f.problem, f.subject) for f in report.findings}
    assert found == {
        ("rule TasksPendingIncreasing", Problem.METRIC_MISSING, "airflow_scheduler_tasks_pending"),
        (
            "rule PrometheusNotIngestingSamples",
            Problem.METRIC_MISSING,
            "prometheus_tsdb_head_samples_appended_total",
        ),
        (
            "rule PrometheusNotIngestingSamples",
            Problem.NO_MATCHING_SERIES,
            'up{job="prometheus-k8s",namespace="monitoring"}',
        ),
        ("rule SchedulerUnhealthyByRelease", Problem.LABEL_MISSING, "airflow_scheduler_heartbeat"),
        ("rule PoolFull", Problem.METRIC_MISSING, "airflow_pool_used_slots"),
    }


async def test_a_dashboard_panel_without_data_is_found(replayed: Replayed) -> None:
    # The metric exists with its labels, but no series passes the filter: an empty panel.
    queries = [
        Query(
            origin="dashboard test.json panel 'Empty'",
            expr='airflow_executor_open_slots{deployment=~".*"} > 1000',
            must_return_data=True,
        )
    ]
    report = await lint_prometheus(replayed.prometheus.url, queries)
    assert [f.problem for f in report.findings] == [Problem.NO_DATA]


def test_cli_reports_no_findings_for_the_catalogue(replayed: Replayed) -> None:
    result = CliRunner().invoke(
        cli, ["lint", "--prometheus", replayed.prometheus.url, "--no-dashboards"]
    )
    assert result.exit_code == 0, result.output
    assert "no findings" in result.output
    assert "not checked (no pgbouncer metrics in this Prometheus)" in result.output


def test_cli_exits_1_and_prints_findings_against_an_empty_prometheus(
    prometheus_server: PrometheusServer,
) -> None:
    result = CliRunner().invoke(
        cli, ["lint", "--prometheus", prometheus_server.url, "--no-dashboards"]
    )
    assert result.exit_code == 1, result.output
    assert "rule AirflowSchedulerHeartbeatMissing: metric missing: airflow_scheduler_heartbeat" in (
        result.output
    )


def test_cli_fails_cleanly_when_prometheus_is_unreachable(
    prometheus_server: PrometheusServer,
) -> None:
    prometheus_server.stop()
    result = CliRunner().invoke(cli, ["lint", "--prometheus", prometheus_server.url])
    assert result.exit_code == 1
    assert "prometheus: ConnectionError contacting Prometheus" in result.output


def test_cli_without_a_prometheus_checks_that_every_query_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core.settings import get_settings

    monkeypatch.delenv("SEXTANT_PROMETHEUS_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["lint"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "0 finding(s); live checks skipped" in result.output
