"""Who is busy, from Flower's gauges: the one query for every deployment scaling down, and what
each shape of its answer means."""

from __future__ import annotations

import math
import re

import pytest

from app.integrations.prometheus import Sample
from app.observability import promql
from app.runtime.base import WorkerLoad
from app.scaling.load import (
    FLOWER_ONLINE,
    FLOWER_RUNNING,
    worker_load_query,
    worker_loads,
    worker_name,
)


def w(worker: str | None, value: float, deployment: str | None = "etl") -> Sample:
    labels = {}
    if worker is not None:
        labels["worker"] = worker
    if deployment is not None:
        labels["deployment"] = deployment
    return Sample(labels, value)


def deployment_patterns(query: str) -> list[str]:
    tree = promql.parse(query)
    return [
        m.value for sel in promql.selectors(tree) for m in sel.matchers if m.name == "deployment"
    ]


def test_one_query_reads_running_tasks_of_online_workers_for_every_deployment_named() -> None:
    query = worker_load_query(["etl", "bi", "etl"], 90)

    assert query == (
        "max by (deployment, worker) (\n"
        f'  {FLOWER_RUNNING}{{deployment=~"bi|etl"}}\n'
        f'  and ({FLOWER_ONLINE}{{deployment=~"bi|etl"}} == 1)\n'
        f'  and (time() - timestamp({FLOWER_RUNNING}{{deployment=~"bi|etl"}}) <= 90)\n'
        ")"
    )
    tree = promql.parse(query)
    assert {s.metric for s in promql.selectors(tree)} == {FLOWER_RUNNING, FLOWER_ONLINE}
    # Every selector is narrowed to exactly the named deployments (Prometheus anchors regexes).
    patterns = deployment_patterns(query)
    assert len(patterns) == 3
    for pattern in patterns:
        assert pattern == "bi|etl"
        assert not re.fullmatch(pattern, "etl-2")
        assert not re.fullmatch(pattern, "")


def test_the_freshness_limit_is_the_one_given() -> None:
    assert "<= 12.5)" in worker_load_query(["etl"], 12.5)


def test_a_name_with_regex_characters_matches_only_itself() -> None:
    [pattern, *_] = deployment_patterns(worker_load_query(["a.b", "etl-prod"], 90))
    assert re.fullmatch(pattern, "a.b")
    assert re.fullmatch(pattern, "etl-prod")
    assert not re.fullmatch(pattern, "axb")


@pytest.mark.parametrize(
    ("celery", "worker"),
    [
        ("celery@workers-7d9f-abcde", "workers-7d9f-abcde"),  # Kubernetes: one worker per pod
        ("workers-2@etl", "workers-2"),  # the local runtime's node names
        ("workers-2", "workers-2"),
    ],
)
def test_celery_names_become_the_runtimes_worker_names(celery: str, worker: str) -> None:
    assert worker_name(celery) == worker


def test_loads_per_deployment_and_worker() -> None:
    loads = worker_loads([
        w("celery@workers-a", 3), w("celery@workers-b", 0),
        w("workers-1@bi", 1, "bi"),
    ])  # fmt: skip
    assert loads == {
        "etl": [WorkerLoad("workers-a", 3), WorkerLoad("workers-b", 0)],
        "bi": [WorkerLoad("workers-1", 1)],
    }


def test_a_worker_two_flowers_report_counts_the_busier() -> None:
    assert worker_loads([w("celery@workers-a", 0), w("celery@workers-a", 2)]) == {
        "etl": [WorkerLoad("workers-a", 2)]
    }


def test_invalid_or_unattributable_samples_leave_the_worker_unknown() -> None:
    loads = worker_loads([
        w("celery@workers-a", math.nan), w("celery@workers-b", -1),
        w("celery@workers-c", math.inf), w(None, 0), w("celery@workers-d", 0, None),
        w("celery@workers-e", 1),
    ])  # fmt: skip
    # Unknown is absent, never idle: only workers-e is known.
    assert loads == {"etl": [WorkerLoad("workers-e", 1)]}


def test_a_deployment_with_no_valid_sample_is_not_in_the_answer() -> None:
    assert worker_loads([w("celery@workers-a", math.nan)]) == {}
    assert worker_loads([]) == {}


def test_a_fractional_value_rounds_up() -> None:
    assert worker_loads([w("celery@workers-a", 0.5)]) == {"etl": [WorkerLoad("workers-a", 1)]}
