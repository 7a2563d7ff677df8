"""Live lint: do the alert rules and dashboards read series that a real Prometheus has?

A rule over a metric nobody exports, or over series without the labels it groups and routes by,
is valid PromQL that can never fire: Astronomer shipped several (`airflow_scheduler_tasks_pending`
after its mapping dropped the metric, a constant `operator="Value"` label, `job="prometheus-k8s"`
filters on a Prometheus whose job is called `prometheus`). This check asks a Prometheus fed by
real deployments, for every selector of every rule and dashboard query:

- does the metric exist;
- does the selector, with its label matchers, match any series;
- do those series carry every label the query groups or joins by, plus `workspace` and
  `deployment` for rules about one deployment (what alerts are routed on);
- and, for dashboard panels, does the query return data at all.

Metrics are checked by the source that produces them, named by prefix (`SOURCES`): `airflow_*`
come from the deployments' StatsD exporters, `pgbouncer_*` from their PgBouncer exporters,
`sextant_*` from Sextant's own /metrics, `up` and `scrape_*` from Prometheus itself. A source is
checked when that Prometheus has any metric of it (or when asked to); the others are reported as
not checked, not as findings, so a Prometheus without, say, PgBouncer exporters still gets a
verdict on everything else. A metric of no known source is always checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from app.integrations.prometheus import PrometheusClient
from app.observability import promql
from app.observability.rules import RuleCatalogue, Scope

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
ROUTING_LABELS = frozenset({"workspace", "deployment"})


class Source(StrEnum):
    AIRFLOW = "airflow"
    PGBOUNCER = "pgbouncer"
    SEXTANT = "sextant"
    PROMETHEUS = "prometheus"
    OTHER = "other"


SOURCES: tuple[tuple[str, Source], ...] = (
    ("airflow_", Source.AIRFLOW),
    ("statsd_exporter_", Source.AIRFLOW),
    ("pgbouncer_", Source.PGBOUNCER),
    ("sextant_", Source.SEXTANT),
    ("scrape_", Source.PROMETHEUS),
)
PROMETHEUS_METRICS = frozenset({"up"})


def source_of(metric: str) -> Source:
    """Which exporter produces `metric`, by its name."""
    if metric in PROMETHEUS_METRICS:
        return Source.PROMETHEUS
    for prefix, source in SOURCES:
        if metric.startswith(prefix):
            return source
    return Source.OTHER


class Problem(StrEnum):
    UNPARSABLE = "unparsable"
    METRIC_MISSING = "metric missing"
    NO_MATCHING_SERIES = "no matching series"
    LABEL_MISSING = "label missing"
    NO_DATA = "no data"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression to check, and where it comes from."""

    origin: str
    expr: str
    # Labels every series read must carry, on top of what the expression groups and joins by.
    routing_labels: frozenset[str] = frozenset()
    # Dashboard panels must show something; alert expressions legitimately return nothing.
    must_return_data: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a query reads that this Prometheus does not have."""

    origin: str
    problem: Problem
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.problem}: {self.subject}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A metric not checked because its source is not scraped by this Prometheus."""

    origin: str
    metric: str
    source: Source


@dataclass
class LintReport:
    """What a lint run found and what it could not check."""

    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    checked_sources: set[Source] = field(default_factory=set)
    queries: int = 0

    @property
    def ok(self) -> bool:
        """True when there is no finding."""
        return not self.findings

    def lines(self) -> list[str]:
        """A human-readable report, findings first."""
        out = [str(finding) for finding in self.findings]
        by_source: dict[Source, set[str]] = {}
        for skipped in self.skipped:
            by_source.setdefault(skipped.source, set()).add(skipped.metric)
        for source, metrics in sorted(by_source.items()):
            listed = ", ".join(sorted(metrics))
            out.append(f"not checked (no {source} metrics in this Prometheus): {listed}")
        sources = ", ".join(sorted(self.checked_sources))
        verdict = f"{len(self.findings)} finding(s)" if self.findings else "no findings"
        out.append(f"{self.queries} queries checked against sources {sources}: {verdict}")
        return out


class MetricsReader(Protocol):
    """What lint needs of Prometheus (app.integrations.prometheus.PrometheusClient)."""

    async def metric_names(self, window: timedelta | None = None) -> set[str]: ...

    async def series(
        self, selector: str, window: timedelta | None = None
    ) -> list[dict[str, str]]: ...

    async def query(self, expr: str) -> Sequence[Any]: ...


# --- What to check ------------------------------------------------------------------------------


def rule_queries(rules: RuleCatalogue) -> list[Query]:
    """One query per alert rule; rules about one deployment must carry its routing labels."""
    return [
        Query(
            origin=f"rule {rule.name}",
            expr=rule.expr,
            routing_labels=ROUTING_LABELS if rule.scope is Scope.DEPLOYMENT else frozenset(),
        )
        for rule in rules.rules
    ]


# Grafana's built-in interval variables, as durations a live Prometheus can evaluate.
_INTERVALS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "interval": "1m",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_MATCHER = re.compile(r'(\b[A-Za-z_]\w*\s*)(=~|!~|!=|=)(\s*)"((?:[^"\\]|\\.)*)"')


def substitute_variables(expr: str) -> str:
    """A dashboard expression with Grafana variables replaced for a lint query.

    Interval variables become durations (`$__rate_interval` → `5m`, `$__range_s` → 3600); a
    variable inside a label matcher's value matches anything (`deployment="$deployment"` →
    `deployment=~".*"`), since lint looks at the whole fleet.
    """

    def matcher(match: re.Match[str]) -> str:
        name, op, space, value = match.groups()
        if not _VARIABLE.search(value):
            return match.group(0)
        value = _VARIABLE.sub(".*", value)
        op = {"=": "=~", "!=": "!~"}.get(op, op)
        return f'{name}{op}{space}"{value}"'

    expr = _MATCHER.sub(matcher, expr)

    def variable(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name.endswith("_s") and name.removesuffix("_s") in _INTERVALS:
            return str(
                int(promql.parse_duration(_INTERVALS[name.removesuffix("_s")]).total_seconds())
            )
        if name.endswith("_ms") and name.removesuffix("_ms") in _INTERVALS:
            seconds = promql.parse_duration(_INTERVALS[name.removesuffix("_ms")]).total_seconds()
            return str(int(seconds * 1000))
        return _INTERVALS.get(name, match.group(0))

    return _VARIABLE.sub(variable, expr)


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\(\s*(?P<expr>.+)\)\s*$", re.DOTALL)


def dashboard_queries(directory: Path = DASHBOARDS_DIR) -> list[Query]:
    """Every Prometheus query of the dashboards in `directory`: panel targets and variables."""
    queries: list[Query] = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        queries.extend(_queries_of_dashboard(path.name, dashboard))
    return queries


def _queries_of_dashboard(file: str, dashboard: Mapping[str, Any]) -> Iterator[Query]:
    for panel in _panels(dashboard.get("panels") or []):
        title = panel.get("title") or f"panel {panel.get('id', '?')}"
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr or not _is_prometheus(target.get("datasource") or panel.get("datasource")):
                continue
            ref = target.get("refId", "?")
            yield Query(
                origin=f"dashboard {file} panel {title!r} ({ref})",
                expr=substitute_variables(str(expr)),
                must_return_data=True,
            )
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        raw = variable.get("query")
        text = raw.get("query") if isinstance(raw, Mapping) else raw
        if not isinstance(text, str):
            continue
        origin = f"dashboard {file} variable {variable.get('name')!r}"
        label_values = _LABEL_VALUES.match(text)
        query_result = _QUERY_RESULT.match(text)
        if label_values:
            yield Query(
                origin=origin,
                expr=substitute_variables(label_values.group("selector")),
                routing_labels=frozenset({label_values.group("label")}),
            )
        elif query_result:
            yield Query(origin=origin, expr=substitute_variables(query_result.group("expr")))


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    # Rows hold their panels inside (collapsed rows) or after them (expanded rows).
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def _is_prometheus(datasource: Any) -> bool:
    if isinstance(datasource, Mapping):
        kind = datasource.get("type")
        return kind is None or kind == "prometheus"
    return True


# --- Checking -----------------------------------------------------------------------------------


async def lint(
    reader: MetricsReader,
    queries: Sequence[Query],
    *,
    window: timedelta | None = None,
    sources: Iterable[Source] | None = None,
) -> LintReport:
    """Check `queries` against the Prometheus behind `reader`.

    `sources` are the sources to check; by default every source with a metric in that
    Prometheus, plus Airflow and Prometheus itself (whose absence is always a finding).
    """
    names = await reader.metric_names(window)
    if sources is None:
        checked = {source_of(name) for name in names} | {Source.AIRFLOW, Source.PROMETHEUS}
    else:
        checked = set(sources)
    checked.add(Source.OTHER)
    report = LintReport(checked_sources=checked - {Source.OTHER})
    series_cache: dict[str, list[dict[str, str]]] = {}
    for query in queries:
        report.queries += 1
        await _check(reader, query, names, checked, window, series_cache, report)
    return report


async def _check(
    reader: MetricsReader,
    query: Query,
    names: set[str],
    checked: set[Source],
    window: timedelta | None,
    series_cache: dict[str, list[dict[str, str]]],
    report: LintReport,
) -> None:
    try:
        tree = promql.parse(query.expr)
    except promql.PromQLError as exc:
        report.findings.append(Finding(query.origin, Problem.UNPARSABLE, query.expr, str(exc)))
        return
    complete = True
    for use in promql.selector_uses(tree):
        metric = use.selector.metric
        if metric is None:
            continue  # a selector by regex on __name__ names no metric to look for
        source = source_of(metric)
        if source not in checked:
            report.skipped.append(Skipped(query.origin, metric, source))
            complete = False
            continue
        if metric not in names:
            report.findings.append(
                Finding(query.origin, Problem.METRIC_MISSING, metric, "no such metric")
            )
            complete = False
            continue
        selector = use.selector.selector_text()
        if selector not in series_cache:
            series_cache[selector] = await reader.series(selector, window)
        series = series_cache[selector]
        if not series:
            report.findings.append(
                Finding(
                    query.origin,
                    Problem.NO_MATCHING_SERIES,
                    selector,
                    f"{metric} exists, but no series matches the selector's label matchers",
                )
            )
            complete = False
            continue
        required = use.required_labels | query.routing_labels
        for label in sorted(required):
            lacking = sum(1 for labels in series if not labels.get(label))
            if lacking:
                report.findings.append(
                    Finding(
                        query.origin,
                        Problem.LABEL_MISSING,
                        selector,
                        f"{lacking} of {len(series)} series have no {label!r} label",
                    )
                )
                complete = False
    if query.must_return_data and complete and not await reader.query(query.expr):
        report.findings.append(
            Finding(query.origin, Problem.NO_DATA, query.expr, "the query returns no series now")
        )


def static_findings(queries: Sequence[Query]) -> list[Finding]:
    """Findings that need no Prometheus: queries that do not parse."""
    findings = []
    for query in queries:
        try:
            promql.parse(query.expr)
        except promql.PromQLError as exc:
            findings.append(Finding(query.origin, Problem.UNPARSABLE, query.expr, str(exc)))
    return findings


async def lint_prometheus(
    url: str,
    queries: Sequence[Query],
    *,
    window: timedelta | None = None,
    sources: Iterable[Source] | None = None,
    timeout: float = 10.0,
) -> LintReport:
    """Lint `queries` against the Prometheus at `url` (IntegrationError if it cannot be read)."""
    client = PrometheusClient(url, timeout)
    try:
        return await lint(client, queries, window=window, sources=sources)
    finally:
        client.close()
