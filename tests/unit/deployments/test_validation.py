"""Whole-spec rules of a deployment, as a table of cases."""

from __future__ import annotations

import pytest

from app.deployments.schemas import ComponentsIn, ComponentSpecIn
from app.deployments.spec import Executor, cpu_millicores, memory_bytes
from app.deployments.validation import check_spec, merge_components


@pytest.mark.parametrize(
    ("quantity", "millicores"),
    [("500m", 500), ("1", 1000), ("1.5", 1500), ("0.25", 250), ("abc", None), ("1.5m", 1)],
)
def test_cpu_quantities(quantity: str, millicores: int | None) -> None:
    assert cpu_millicores(quantity) == millicores


@pytest.mark.parametrize(
    ("quantity", "size"),
    [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1024", 1024), ("1.5Gi", None)],
)
def test_memory_quantities(quantity: str, size: int | None) -> None:
    assert memory_bytes(quantity) == size


def test_defaults_alone_are_valid() -> None:
    components, problems = merge_components(Executor.CELERY, {}, None)
    assert problems == []
    assert check_spec(Executor.CELERY, components, 1, 10) == []


def test_request_overlays_current_values() -> None:
    current = {"scheduler": {"replicas": 2, "cpu": "2", "memory": "4Gi"}}
    requested = ComponentsIn(scheduler=ComponentSpecIn(memory="3Gi"))
    components, _ = merge_components(Executor.CELERY, current, requested)
    assert components["scheduler"] == {"replicas": 2, "cpu": "2", "memory": "3Gi"}


@pytest.mark.parametrize(
    ("executor", "components", "min_workers", "max_workers", "fields"),
    [
        (Executor.CELERY, {"scheduler": {"replicas": 0}}, 1, 10, ["components.scheduler.replicas"]),
        (Executor.CELERY, {"triggerer": {"replicas": 0}}, 1, 10, []),
        (Executor.CELERY, {"workers": {"replicas": 0}}, 1, 10, ["components.workers.replicas"]),
        (Executor.CELERY, {"workers": {"replicas": 0}}, 0, 10, []),
        (Executor.CELERY, {"statsd": {"memory": "16Mi"}}, 1, 10, ["components.statsd.memory"]),
        (Executor.CELERY, {}, 3, 2, ["min_workers", "components.workers.replicas"]),
        (Executor.LOCAL, {}, 3, 2, ["min_workers"]),
    ],
)
def test_spec_problems_name_their_fields(
    executor: Executor,
    components: dict[str, dict[str, object]],
    min_workers: int,
    max_workers: int,
    fields: list[str],
) -> None:
    merged, _ = merge_components(executor, {}, None)
    for name, overrides in components.items():
        merged[name].update(overrides)
    assert [field for field, _ in check_spec(executor, merged, min_workers, max_workers)] == fields
