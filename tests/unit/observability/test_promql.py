"""The PromQL tokenizer and parser: selectors, required labels, threshold splits (tables)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.observability import promql


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", ["up"]),
        ("up == 0", ["up"]),
        ('up{job="x"}', ['up{job="x"}']),
        ('{__name__="up", job="x"}', ['up{job="x"}']),
        ("rate(airflow_ti_finish[5m])", ["airflow_ti_finish"]),
        ("sum by (deployment) (rate(a[5m]))", ["a"]),
        ("sum(rate(a[5m])) by (deployment)", ["a"]),
        # function names, keywords, label names and literals are not metrics
        ("histogram_quantile(0.95, sum by (le) (rate(x_bucket[10m])))", ["x_bucket"]),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', ["a"]),
        ("a and on (instance, job) b", ["a", "b"]),
        ("a / ignoring (state) group_left (team) b", ["a", "b"]),
        ("a unless b or c", ["a", "b", "c"]),
        ("time() - max_over_time(timestamp(a > a offset 10s)[30m:10s])", ["a", "a"]),
        ('count_values("v", a)', ["a"]),
        ("topk(5, a)", ["a"]),
        ("quantile(0.9, a) by (x)", ["a"]),
        ("vector(0)", []),
        ("absent(nope)", ["nope"]),
        ("a @ start()", ["a"]),
        ("a offset -5m", ["a"]),
        ("rate(a[1h30m:])", ["a"]),
        ("-a ^ 2 * b % c atan2 d", ["a", "b", "c", "d"]),
        ("a > bool 1", ["a"]),
        ("job:request_rate:sum5m", ["job:request_rate:sum5m"]),
        ("# comment\nsum(a) # trailing", ["a"]),
        ('a{l=~"x|y", m!~`z.*`, n!="w"}', ['a{l=~"x|y",m!~"z.*",n!="w"}']),
        ("Inf > a and NaN < b", ["a", "b"]),
        ("0x1F * a + 1e3 - .5", ["a"]),
        ("sum by (on, by) (a)", ["a"]),
    ],
)
def test_selectors_are_the_metrics_read(expr: str, expected: list[str]) -> None:
    assert [s.selector_text() for s in promql.selectors(promql.parse(expr))] == expected


@pytest.mark.parametrize(
    ("expr", "required"),
    [
        ("a", {"a": set()}),
        ("sum by (workspace, deployment) (a)", {"a": {"workspace", "deployment"}}),
        ("sum(a) by (pool)", {"a": {"pool"}}),
        ("sum without (pool) (a)", {"a": set()}),
        ("max by (d) (sum by (d, e) (a))", {"a": {"d", "e"}}),
        ("a and on (instance, job) b", {"a": {"instance", "job"}, "b": {"instance", "job"}}),
        ("a * on (x) group_left (team) b", {"a": {"x"}, "b": {"x", "team"}}),
        ("a * on (x) group_right (team) b", {"a": {"x", "team"}, "b": {"x"}}),
        ("a / ignoring (state) b", {"a": set(), "b": set()}),
        ('sum by (dst) (label_replace(a, "dst", "$1", "src", "(.*)"))', {"a": set()}),
        (
            "histogram_quantile(0.95, sum by (deployment, le) (rate(x_bucket[5m])))",
            {"x_bucket": {"deployment", "le"}},
        ),
    ],
)
def test_required_labels_come_from_grouping_and_matching(
    expr: str, required: dict[str, set[str]]
) -> None:
    uses = promql.selector_uses(promql.parse(expr))
    assert {u.selector.metric: set(u.required_labels) for u in uses} == required


@pytest.mark.parametrize(
    ("expr", "measure", "op", "threshold"),
    [
        ("a > 60", "a", ">", 60.0),
        ("sum by (d) (a) >= 0.5", "sum by (d) (a)", ">=", 0.5),
        ("x / y > 0.1", "x / y", ">", 0.1),
        ("(a and on (d) b) > 0", "(a and on (d) b)", ">", 0.0),
        ("a < -1", "a", "<", -1.0),
        ("(a > 3)", "a", ">", 3.0),
        ("a == 0", "a", "==", 0.0),
    ],
)
def test_threshold_split(expr: str, measure: str, op: str, threshold: float) -> None:
    assert promql.split_threshold(expr) == promql.ThresholdSplit(measure, op, threshold)


@pytest.mark.parametrize(
    "expr",
    [
        "a",
        "a > b",  # the right side is not a number
        "a > bool 1",  # a 0/1 vector, not a filter
        "a > 1 and b",  # the root is `and`
        "a > 1 or b > 2",
        "1 < a",  # the number is on the left
    ],
)
def test_threshold_split_refuses_other_shapes(expr: str) -> None:
    assert promql.split_threshold(expr) is None


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "sum(",
        "rate(a[5m]",
        "a{job=x}",  # unquoted value
        "a{job}",
        "nosuchfunction(a)",
        "(a + b)[5m]",  # a range needs a selector (or a subquery's colon)
        "a b",
        "by (x) (a)",
        "a ==",
        "5m",
        "a[5q]",
        "a ~ b",
    ],
)
def test_invalid_promql_is_refused(expr: str) -> None:
    with pytest.raises(promql.PromQLError):
        promql.parse(expr)


def test_spans_cut_the_original_text() -> None:
    text = 'sum by (d) (rate(a{x="1"}[5m] offset 1m))'
    node = promql.parse(text)
    assert isinstance(node, promql.Aggregation)
    assert text[node.expr.start : node.expr.end] == 'rate(a{x="1"}[5m] offset 1m)'


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("0", 0), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("100ms", 0.1), ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert promql.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "-5m", "1.5h"])
def test_invalid_durations(text: str) -> None:
    with pytest.raises(promql.PromQLError):
        promql.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (30, "30s"), (90, "1m30s"), (3600, "1h"), (0.25, "250ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert promql.format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    ("value", "op", "threshold", "holds"),
    [
        (61, ">", 60, True),
        (60, ">", 60, False),
        (60, ">=", 60, True),
        (0.05, "<", 0.1, True),
        (float("nan"), ">", 0, False),
        (float("nan"), "!=", 0, False),
        (0, "==", 0, True),
    ],
)
def test_compare_filters_as_prometheus_does(
    value: float, op: str, threshold: float, holds: bool
) -> None:
    assert promql.compare(value, op, threshold) is holds
