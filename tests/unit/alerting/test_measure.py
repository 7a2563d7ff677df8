"""Reducing a fleet-wide query answer to one value per deployment."""

from __future__ import annotations

import math

from app.alerting.measure import (
    PrometheusSource,
    answers_any_promql,
    for_deployment,
    per_deployment,
    source_identity,
)
from app.integrations.prometheus import PrometheusClient, Sample
from tests.fakes.metrics import FakeMetricSource


def s(value: float, **labels: str) -> Sample:
    return Sample(labels, value)


def test_empty_answer_gives_no_values() -> None:
    assert per_deployment([]).values == {}


def test_worst_series_counts_per_deployment() -> None:
    samples = [s(3, deployment="a", pool="p1"), s(9, deployment="a", pool="p2"),
               s(5, deployment="b")]  # fmt: skip
    assert per_deployment(samples).values == {"a": 9, "b": 5}
    assert per_deployment(samples, lower_is_worse=True).values == {"a": 3, "b": 5}


def test_nan_and_infinite_samples_are_ignored() -> None:
    samples = [s(math.nan, deployment="a"), s(math.inf, deployment="b"), s(2, deployment="b")]
    assert per_deployment(samples).values == {"b": 2}


def test_series_without_a_deployment_are_counted_not_used() -> None:
    result = per_deployment([s(1, job="x"), s(4, deployment="a")])
    assert result.values == {"a": 4}
    assert result.unattributed == 1


def test_a_measure_for_one_deployment_restricts_every_selector_and_nothing_else() -> None:
    measure = (
        "min by (workspace, deployment) ((time() - max_over_time(timestamp(hb > hb offset 10s)"
        '[30m:10s]) or time() - min_over_time(timestamp(hb{job="airflow"})[30m:10s])) and hb)'
    )
    assert for_deployment(measure, "etl-prod") == (
        "min by (workspace, deployment) ((time() - max_over_time(timestamp("
        'hb{deployment="etl-prod"} > hb{deployment="etl-prod"} offset 10s)[30m:10s]) or '
        "time() - min_over_time(timestamp("
        'hb{deployment="etl-prod",job="airflow"})[30m:10s])) and hb{deployment="etl-prod"})'
    )


def test_what_is_remembered_about_a_source_is_keyed_by_the_prometheus_it_asks() -> None:
    first = PrometheusSource(PrometheusClient("http://prometheus-a:9090/"))
    again = PrometheusSource(PrometheusClient("http://prometheus-a:9090"))
    other = PrometheusSource(PrometheusClient("http://prometheus-b:9090"))
    assert source_identity(first) == source_identity(again) == "http://prometheus-a:9090"
    assert source_identity(other) != source_identity(first)
    assert answers_any_promql(first)
    fake = FakeMetricSource()
    assert source_identity(fake) != source_identity(FakeMetricSource())
    assert not answers_any_promql(fake)
