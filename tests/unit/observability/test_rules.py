"""The rule catalogue: its structure, its parameters, and per-deployment overrides."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from app.observability.promql import Aggregation, parse
from app.observability.rules import (
    RULES_DIR,
    AlertRule,
    CatalogueError,
    RuleOverride,
    Scope,
    Severity,
    ThresholdUnit,
    catalogue,
    load_catalogue,
    parse_rule_file,
    validate_threshold,
)

EXPECTED_RULES = {
    "AirflowSchedulerHeartbeatMissing",
    "AirflowSchedulerLagHigh",
    "AirflowDagProcessorHeartbeatMissing",
    "AirflowTriggererHeartbeatMissing",
    "AirflowDagImportErrors",
    "AirflowTasksStarving",
    "AirflowTasksQueuedWorkersAtMax",
    "AirflowTaskFailureRateHigh",
    "AirflowTriggererCapacityLow",
    "AirflowMetricsAbsent",
    "AirflowPgBouncerClientsWaiting",
    "AirflowManySchedulersUnhealthy",
}


def raw_alerts() -> list[dict[str, object]]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def test_the_catalogue_has_exactly_the_agreed_rules() -> None:
    assert set(catalogue().names()) == EXPECTED_RULES
    assert len(catalogue().names()) == len(EXPECTED_RULES)


@pytest.mark.parametrize("raw", raw_alerts(), ids=lambda r: str(r["alert"]))
def test_every_alert_has_expr_for_severity_and_annotations(raw: dict[str, object]) -> None:
    assert isinstance(raw["expr"], str)
    assert raw["expr"].strip()
    assert "for" in raw
    labels = raw["labels"]
    assert isinstance(labels, dict)
    assert labels["severity"] in {s.value for s in Severity}
    assert labels["scope"] in {s.value for s in Scope}
    annotations = raw["annotations"]
    assert isinstance(annotations, dict)
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations[key]).strip(), key
    assert "$value" in str(annotations["description"])


@pytest.mark.parametrize("rule", catalogue().rules, ids=lambda r: r.name)
def test_deployment_rules_group_by_workspace_and_deployment(rule: AlertRule) -> None:
    # The alert's identity comes from the series: the outermost aggregation keeps both labels
    # (checked against real firing alerts by the promtool tests' exp_labels).
    if rule.scope is not Scope.DEPLOYMENT:
        assert "deployment" not in rule.labels
        return
    assert not {"workspace", "deployment"} & set(rule.labels)
    if rule.measure is None:  # AirflowMetricsAbsent passes `up`'s labels through
        assert 'up{deployment!="", component!="flower"}' in rule.expr
        return
    outermost = next(n for n in parse(rule.measure).walk() if isinstance(n, Aggregation))
    assert {"workspace", "deployment"} <= set(outermost.grouping), rule.name


@pytest.mark.parametrize("rule", catalogue().rules, ids=lambda r: r.name)
def test_runbook_urls_point_at_a_section_of_the_readme(rule: AlertRule) -> None:
    readme = (RULES_DIR / "README.md").read_text()
    anchors = {heading.lower() for heading in re.findall(r"^### (\w+)$", readme, re.MULTILINE)}
    url = rule.annotations["runbook_url"]
    assert url == f"alert_rules/README.md#{rule.name.lower()}"
    assert rule.name.lower() in anchors


def test_tunable_rules_split_into_measure_and_default_threshold() -> None:
    rules = catalogue()
    heartbeat = rules.get("AirflowSchedulerHeartbeatMissing")
    assert heartbeat.threshold is not None
    assert (heartbeat.threshold.op, heartbeat.threshold.value) == (">", 60)
    assert heartbeat.threshold.unit is ThresholdUnit.SECONDS
    assert heartbeat.measure is not None
    assert heartbeat.measure.startswith("min by (workspace, deployment)")
    assert heartbeat.for_ == timedelta(0)
    lag = rules.get("AirflowSchedulerLagHigh")
    assert lag.threshold is not None
    assert lag.threshold.value == 120
    assert lag.measure is not None
    assert "airflow_dagrun_schedule_delay_bucket[10m]" in lag.measure
    failure = rules.get("AirflowTaskFailureRateHigh")
    assert failure.threshold is not None
    assert failure.threshold.unit is ThresholdUnit.RATIO
    assert rules.get("AirflowMetricsAbsent").threshold is None


def test_every_rule_but_metrics_absent_has_a_tunable_threshold() -> None:
    untunable = {rule.name for rule in catalogue().rules if rule.threshold is None}
    assert untunable == {"AirflowMetricsAbsent"}


def test_expr_with_another_threshold_keeps_the_measure() -> None:
    rule = catalogue().get("AirflowSchedulerLagHigh")
    assert rule.expr_with() == f"{rule.measure} > 120"
    assert rule.expr_with(300) == f"{rule.measure} > 300"
    assert rule.expr_with(0.5).endswith("> 0.5")
    # The re-assembled expression is still valid PromQL.
    parse(rule.expr_with(300))
    with pytest.raises(CatalogueError):
        catalogue().get("AirflowMetricsAbsent").expr_with(1)


def test_overrides_apply_per_deployment() -> None:
    rules = catalogue()
    default = rules.effective("AirflowSchedulerHeartbeatMissing")
    assert (default.threshold, default.severity, default.muted) == (60, Severity.CRITICAL, False)
    assert default.breached(61)
    assert not default.breached(59)
    custom = rules.effective(
        "AirflowSchedulerHeartbeatMissing",
        RuleOverride(threshold=300, for_=timedelta(minutes=2), severity=Severity.WARNING),
    )
    assert (custom.threshold, custom.for_, custom.severity) == (
        300,
        timedelta(minutes=2),
        Severity.WARNING,
    )
    assert not custom.breached(120)
    assert custom.breached(301)
    assert not custom.breached(float("nan"))


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("AirflowSchedulerHeartbeatMissing", 90, 90.0),
        ("AirflowSchedulerHeartbeatMissing", "90", 90.0),
        ("AirflowSchedulerHeartbeatMissing", "2m", 120.0),
        ("AirflowSchedulerHeartbeatMissing", "1m30s", 90.0),
        ("AirflowTaskFailureRateHigh", 0.25, 0.25),
        ("AirflowTaskFailureRateHigh", "25%", 0.25),
        ("AirflowDagImportErrors", 3, 3.0),
    ],
)
def test_threshold_overrides_accept_the_rule_s_unit(
    rule: str, value: float | str, expected: float
) -> None:
    assert validate_threshold(catalogue().get(rule), value) == expected


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("AirflowSchedulerHeartbeatMissing", "soon"),
        ("AirflowSchedulerHeartbeatMissing", -5),
        ("AirflowSchedulerHeartbeatMissing", float("inf")),
        ("AirflowSchedulerHeartbeatMissing", True),
        ("AirflowSchedulerHeartbeatMissing", "25%"),  # a percentage is not a duration
        ("AirflowTaskFailureRateHigh", 25),  # a ratio, not a percentage number
        ("AirflowTaskFailureRateHigh", "2m"),
        ("AirflowTaskFailureRateHigh", "x%"),
        ("AirflowDagImportErrors", "2m"),
        ("AirflowMetricsAbsent", 1),  # no threshold at all
    ],
)
def test_threshold_overrides_of_the_wrong_type_or_unit_are_refused(
    rule: str, value: float | str
) -> None:
    with pytest.raises(ValueError, match=rule):
        validate_threshold(catalogue().get(rule), value)


def test_catalogue_files_are_the_committed_text() -> None:
    files = catalogue().files
    assert set(files) == {p.name for p in RULES_DIR.glob("*.rules.yml")}
    for name, text in files.items():
        assert text == (RULES_DIR / name).read_text()


RULE = """\
groups:
  - name: g
    rules:
      - record: not_an_alert
        expr: sum(a)
      - alert: A
        expr: {expr}
        for: 1m
        labels: {{severity: warning, scope: deployment}}
        annotations: {{summary: s, description: "v {{{{ $value }}}}", runbook_url: r{extra}}}
"""


@pytest.mark.parametrize(
    ("expr", "extra", "message"),
    [
        ("sum(a", "", "expected"),
        ("a > b", ", sextant_threshold_unit: count", "is not `<measure> <comparison> <number>`"),
        ("a > 1", ", sextant_threshold_unit: furlongs", "furlongs"),
    ],
)
def test_rule_files_breaking_conventions_are_refused(expr: str, extra: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(message)):
        parse_rule_file("x.rules.yml", RULE.format(expr=expr, extra=extra))


def test_recording_rules_are_ignored_and_alerts_parsed() -> None:
    (rule,) = parse_rule_file("x.rules.yml", RULE.format(expr="a > 1", extra=""))
    assert (rule.name, rule.group, rule.file, rule.threshold) == ("A", "g", "x.rules.yml", None)


def test_missing_for_or_severity_is_refused() -> None:
    text = RULE.format(expr="a > 1", extra="").replace("        for: 1m\n", "")
    with pytest.raises(CatalogueError, match="no `for`"):
        parse_rule_file("x.rules.yml", text)
    text = RULE.format(expr="a > 1", extra="").replace("severity: warning", "severity: loud")
    with pytest.raises(CatalogueError, match="loud"):
        parse_rule_file("x.rules.yml", text)


def test_an_alert_name_used_twice_is_refused(tmp_path: Path) -> None:
    for name in ("a.rules.yml", "b.rules.yml"):
        (tmp_path / name).write_text(RULE.format(expr="a > 1", extra=""))
    with pytest.raises(CatalogueError, match="used twice: A"):
        load_catalogue(tmp_path)
