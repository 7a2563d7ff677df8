"""Heartbeat silence from remembered increases: recognising the measure, and the memory's rounds."""

from __future__ import annotations

import math

import pytest

from app.alerting.heartbeat import (
    LOOKBACK,
    MARGIN,
    HeartbeatCount,
    HeartbeatMemory,
    ages_per_deployment,
    catalogue_measure,
    heartbeat_count,
    heartbeat_counter,
    increases_query,
)
from app.integrations.prometheus import Sample
from app.observability.rules import Scope, catalogue

T0 = 1_800_000_000.0
INF = math.inf


def test_the_catalogue_heartbeat_rules_are_recognised_with_their_counters() -> None:
    rules = catalogue()
    found = {r.name: heartbeat_counter(r.measure) for r in rules.rules if r.measure}
    assert {name: counter for name, counter in found.items() if counter} == {
        "AirflowSchedulerHeartbeatMissing": "airflow_scheduler_heartbeat",
        "AirflowDagProcessorHeartbeatMissing": "airflow_dag_processor_heartbeat",
        "AirflowTriggererHeartbeatMissing": "airflow_triggerer_heartbeat",
    }
    fleet = [heartbeat_count(r.expr) for r in rules.rules if r.scope is Scope.FLEET]
    assert fleet == [HeartbeatCount("airflow_scheduler_heartbeat", 60.0, 3.0)]


def test_the_rebuilt_measure_is_the_catalogue_s_text_whitespace_aside() -> None:
    rule = catalogue().get("AirflowSchedulerHeartbeatMissing")
    assert rule.measure is not None
    rebuilt = catalogue_measure("airflow_scheduler_heartbeat")
    assert "".join(rebuilt.split()) == "".join(rule.measure.split())


@pytest.mark.parametrize(
    "measure",
    [
        # another step, another look-back, a counter that differs between the branches
        "min by (workspace, deployment) ((time() - max_over_time(timestamp(c > c offset 10s)"
        "[30m:5s]) or time() - min_over_time(timestamp(c)[30m:10s])) and c)",
        "min by (workspace, deployment) ((time() - max_over_time(timestamp(c > c offset 10s)"
        "[1h:10s]) or time() - min_over_time(timestamp(c)[1h:10s])) and c)",
        "min by (workspace, deployment) ((time() - max_over_time(timestamp(a > a offset 10s)"
        "[30m:10s]) or time() - min_over_time(timestamp(b)[30m:10s])) and a)",
        "max by (deployment) (airflow_executor_queued_tasks)",
    ],
)
def test_anything_but_the_exact_measure_is_asked_as_written(measure: str) -> None:
    assert heartbeat_counter(measure) is None


def test_the_increases_query_reaches_back_the_whole_window_in_seconds() -> None:
    query = increases_query("airflow_triggerer_heartbeat", 25.2)
    assert "[26s:1s]" in query
    assert query.count("airflow_triggerer_heartbeat") == 4


def test_the_first_round_needs_the_full_measure_and_later_ones_only_a_window() -> None:
    memory = HeartbeatMemory()
    assert memory.window(T0) is None
    assert memory.seed({"etl": 12.0, "ml": 300.0}, T0) == {"etl": 12.0, "ml": 300.0}
    assert memory.window(T0 + 15) == 15 + MARGIN


def test_silence_grows_between_increases_and_restarts_at_each() -> None:
    memory = HeartbeatMemory()
    memory.seed({"etl": 12.0, "ml": 300.0}, T0)
    # etl rose 3 s before this round, ml did not.
    assert memory.advance({"etl": 3.0, "ml": INF}, T0 + 15) == {"etl": 3.0, "ml": 315.0}
    assert memory.advance({"etl": INF, "ml": INF}, T0 + 30) == {"etl": 18.0, "ml": 330.0}


def test_an_overlapping_window_never_moves_the_last_increase_back() -> None:
    memory = HeartbeatMemory()
    memory.seed({"etl": 2.0}, T0)
    # The window reaches back past the previous round and sees an older increase.
    assert memory.advance({"etl": 14.0}, T0 + 10) == {"etl": 12.0}


def test_a_counter_that_is_gone_has_no_value_and_is_remembered_when_it_returns() -> None:
    memory = HeartbeatMemory()
    memory.seed({"etl": 5.0, "ml": 5.0}, T0)
    assert memory.advance({"ml": INF}, T0 + 15) == {"ml": 20.0}
    assert memory.advance({"etl": INF, "ml": INF}, T0 + 30) == {"etl": 35.0, "ml": 35.0}


def test_a_counter_nothing_is_known_of_asks_for_the_full_measure() -> None:
    memory = HeartbeatMemory()
    memory.seed({"etl": 5.0}, T0)
    # A new deployment whose counter did not rise in the window: how long has it been silent?
    assert memory.advance({"etl": 1.0, "new": INF}, T0 + 15) is None
    # One that rose in the window is measured at once.
    assert memory.advance({"etl": 1.0, "new": 4.0}, T0 + 15) == {"etl": 1.0, "new": 4.0}


def test_a_gap_longer_than_the_look_back_or_a_clock_going_back_starts_over() -> None:
    memory = HeartbeatMemory()
    memory.seed({"etl": 5.0}, T0)
    assert memory.window(T0 + LOOKBACK) is None
    assert memory.window(T0 - 1) is None


def test_values_are_capped_at_the_look_back_like_the_catalogue_measure() -> None:
    memory = HeartbeatMemory()
    memory.seed({"etl": 1700.0}, T0)
    assert memory.advance({"etl": INF}, T0 + 200) == {"etl": LOOKBACK}


def test_the_freshest_series_of_a_deployment_counts() -> None:
    samples = [Sample({"deployment": "etl", "instance": "a"}, INF),
               Sample({"deployment": "etl", "instance": "b"}, 4.0),
               Sample({"deployment": "ml"}, INF), Sample({"job": "x"}, 1.0)]  # fmt: skip
    assert ages_per_deployment(samples) == {"etl": 4.0, "ml": INF}
