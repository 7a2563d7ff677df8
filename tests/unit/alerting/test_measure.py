"""Reducing a fleet-wide query answer to one value per deployment."""

from __future__ import annotations

import math

from app.alerting.measure import for_deployment, per_deployment
from app.integrations.prometheus import Sample


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
