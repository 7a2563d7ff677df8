"""What lint checks: metric sources, Grafana variable substitution, queries of dashboards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.observability import promql
from app.observability.lint import (
    Finding,
    LintReport,
    Problem,
    Skipped,
    Source,
    dashboard_queries,
    rule_queries,
    source_of,
    static_findings,
    substitute_variables,
)
from app.observability.rules import catalogue


@pytest.mark.parametrize(
    ("metric", "source"),
    [
        ("airflow_scheduler_heartbeat", Source.AIRFLOW),
        ("statsd_exporter_lines_total", Source.AIRFLOW),
        ("pgbouncer_pools_client_waiting_connections", Source.PGBOUNCER),
        ("sextant_scaling_max_workers", Source.SEXTANT),
        ("up", Source.PROMETHEUS),
        ("scrape_samples_scraped", Source.PROMETHEUS),
        ("kube_pod_info", Source.OTHER),
        ("upstream_latency", Source.OTHER),
    ],
)
def test_sources_by_metric_name(metric: str, source: Source) -> None:
    assert source_of(metric) is source


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum(rate(a{workspace=~"$workspace", deployment=~"$deployment"}[$__rate_interval]))',
            'sum(rate(a{workspace=~".*", deployment=~".*"}[5m]))',
        ),
        ('a{deployment="$deployment"}', 'a{deployment=~".*"}'),
        ('a{deployment!="${deployment}"}', 'a{deployment!~".*"}'),
        ('a{pool=~"[[pool]]"}', 'a{pool=~".*"}'),
        ('a{deployment=~"${deployment:regex}"}', 'a{deployment=~".*"}'),
        ('a{deployment="etl-$env"}', 'a{deployment=~"etl-.*"}'),
        ("increase(a[$__range])", "increase(a[1h])"),
        ("a * $__range_s", "a * 3600"),
        ("a[${__interval}]", "a[1m]"),
        ('a{state="failed"}', 'a{state="failed"}'),
    ],
)
def test_grafana_variables_are_substituted(expr: str, expected: str) -> None:
    assert substitute_variables(expr) == expected
    promql.parse(substitute_variables(expr))


def dashboard(panels: list[dict[str, object]], variables: list[dict[str, object]]) -> str:
    return json.dumps({"panels": panels, "templating": {"list": variables}})


def test_dashboard_queries_cover_panels_rows_and_variables(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(
        dashboard(
            [
                {
                    "title": "Heartbeats",
                    "targets": [{"refId": "A", "expr": "rate(a[$__rate_interval])"}],
                },
                {
                    "type": "row",
                    "title": "Row",
                    "panels": [{"title": "Inner", "targets": [{"refId": "B", "expr": "b"}]}],
                },
                {
                    "title": "Logs",
                    "targets": [
                        {"refId": "C", "expr": "x", "datasource": {"type": "elasticsearch"}}
                    ],
                },
                {"title": "Text"},
            ],
            [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "workspace", "type": "query", "query": "label_values(a, workspace)"},
                {
                    "name": "deployment",
                    "type": "query",
                    "query": {"query": 'label_values(a{workspace=~"$workspace"}, deployment)'},
                },
                {"name": "dag", "type": "query", "query": "query_result(topk(5, c))"},
            ],
        )
    )
    queries = {q.origin: q for q in dashboard_queries(tmp_path)}
    assert set(queries) == {
        "dashboard d.json panel 'Heartbeats' (A)",
        "dashboard d.json panel 'Inner' (B)",
        "dashboard d.json variable 'workspace'",
        "dashboard d.json variable 'deployment'",
        "dashboard d.json variable 'dag'",
    }
    heartbeats = queries["dashboard d.json panel 'Heartbeats' (A)"]
    assert (heartbeats.expr, heartbeats.must_return_data) == ("rate(a[5m])", True)
    deployment = queries["dashboard d.json variable 'deployment'"]
    assert deployment.expr == 'a{workspace=~".*"}'
    assert deployment.routing_labels == {"deployment"}
    assert not deployment.must_return_data
    assert queries["dashboard d.json variable 'dag'"].expr == "topk(5, c)"


def test_committed_dashboards_and_rules_all_parse() -> None:
    queries = rule_queries(catalogue()) + dashboard_queries()
    assert static_findings(queries) == []


def test_deployment_rules_are_checked_for_routing_labels() -> None:
    queries = {q.origin: q for q in rule_queries(catalogue())}
    assert queries["rule AirflowSchedulerLagHigh"].routing_labels == {"workspace", "deployment"}
    assert queries["rule AirflowManySchedulersUnhealthy"].routing_labels == frozenset()


def test_report_lists_findings_then_what_was_not_checked() -> None:
    report = LintReport(
        findings=[Finding("rule R", Problem.METRIC_MISSING, "m", "no such metric")],
        skipped=[
            Skipped("rule S", "sextant_b", Source.SEXTANT),
            Skipped("rule T", "sextant_a", Source.SEXTANT),
        ],
        checked_sources={Source.AIRFLOW},
        queries=3,
    )
    assert report.lines() == [
        "rule R: metric missing: m: no such metric",
        "not checked (no sextant metrics in this Prometheus): sextant_a, sextant_b",
        "3 queries checked against sources airflow: 1 finding(s)",
    ]
    assert not report.ok
