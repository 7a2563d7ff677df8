"""From the fleet query's answer to one observation per deployment, every shape of answer."""

from __future__ import annotations

import math

from app.integrations.prometheus import RangePoint, RangeSeries, Sample
from app.runtime.base import WorkerLoad
from app.scaling.load import fleet_load, load_points
from app.scaling.policy import Observation
from app.scaling.service import choose_victims


def s(measure: str, value: float, deployment: str | None = "a", **labels: str) -> Sample:
    base = {"measure": measure, **labels}
    if deployment is not None:
        base["deployment"] = deployment
    return Sample(base, value)


def test_queued_running_and_age_per_deployment() -> None:
    load = fleet_load([
        s("queued", 3), s("running", 5), s("age", 2),
        s("queued", 0, "b"), s("running", 1, "b"), s("age", 1, "b"),
    ])  # fmt: skip
    assert load.observation("a", None) == Observation(3, 5, 2)
    assert load.observation("b", None) == Observation(0, 1, 1)


def test_a_deployment_without_series_has_no_value() -> None:
    assert fleet_load([s("queued", 3)]).observation("other", None) == Observation(None, None)


def test_one_missing_measure_is_partial() -> None:
    assert fleet_load([s("queued", 3)]).observation("a", None) == Observation(3, None)


def test_nan_is_remembered_as_invalid_not_as_missing() -> None:
    observed = fleet_load([s("queued", math.nan), s("running", 1)]).observation("a", None)
    assert observed.queued is not None
    assert math.isnan(observed.queued)


def test_several_series_of_one_measure_count_the_highest() -> None:
    load = fleet_load([s("queued", 3), s("queued", 7), s("running", 0)])
    assert load.observation("a", None).queued == 7


def test_unlabelled_series_are_ignored() -> None:
    load = fleet_load([s("queued", 99, None), s("queued", 1), s("running", 1)])
    assert load.observation("a", None) == Observation(1, 1)


def test_a_queue_filter_counts_that_queue_and_an_absent_queue_is_idle() -> None:
    samples = [
        s("queued", 10), s("running", 10), s("age", 1),
        s("queued_in_queue", 4, queue="default"), s("running_in_queue", 2, queue="default"),
        s("queued_in_queue", 6, queue="gpu"),
    ]  # fmt: skip
    load = fleet_load(samples)
    assert load.observation("a", "gpu") == Observation(6, 0, 1)
    assert load.observation("a", "default") == Observation(4, 2, 1)
    assert load.observation("a", "none-such") == Observation(0, 0, 1)


def test_a_queue_filter_without_executor_gauges_is_still_missing_data() -> None:
    load = fleet_load([s("queued_in_queue", 4, queue="gpu")])
    assert load.observation("a", "gpu") == Observation(None, None)


def test_range_answer_becomes_a_full_timeline_with_gaps() -> None:
    series = [
        RangeSeries({"deployment": "a", "measure": "queued"},
                    (RangePoint(100, 1), RangePoint(120, 3))),
        RangeSeries({"deployment": "a", "measure": "running"},
                    (RangePoint(100, 2), RangePoint(120, 4))),
    ]  # fmt: skip
    points = load_points(series, None, 100, 130, 10)
    assert [(p.at, p.queued, p.running) for p in points] == [
        (100, 1, 2), (110, None, None), (120, 3, 4), (130, None, None),
    ]  # fmt: skip


def test_victims_are_the_idle_workers_first_newest_first() -> None:
    loads = [
        WorkerLoad("worker-1", 0), WorkerLoad("worker-2", 3), WorkerLoad("worker-3", 0),
        WorkerLoad("worker-4", 1),
    ]  # fmt: skip
    assert choose_victims(loads, 2) == ["worker-3", "worker-1"]
    assert choose_victims(loads, 3) == ["worker-3", "worker-1", "worker-4"]
    assert choose_victims(loads, 0) == []
