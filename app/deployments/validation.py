"""Rules a whole deployment spec must satisfy beyond each field's own type.

Pure functions: they take the merged spec and return the problems, each naming its field, so the
API can answer one 422 that lists everything wrong.
"""

from __future__ import annotations

from typing import Any

from app.deployments.schemas import ComponentsIn
from app.deployments.spec import (
    CATALOGUE,
    CELERY_ONLY,
    Component,
    Executor,
    components_for,
    cpu_millicores,
    memory_bytes,
)

Problem = tuple[str, str]


def merge_components(
    executor: Executor, current: dict[str, Any], requested: ComponentsIn | None
) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """The full component spec: current values (or defaults) overlaid with the request."""
    problems: list[Problem] = []
    merged: dict[str, dict[str, Any]] = {}
    for component in components_for(executor):
        defaults = CATALOGUE[component]
        base = current.get(component.value) or {
            "replicas": defaults.replicas,
            "cpu": defaults.cpu,
            "memory": defaults.memory,
        }
        merged[component.value] = dict(base)
    if requested is not None:
        for field, spec in requested:
            if spec is None:
                continue
            if executor is Executor.LOCAL and Component(field) in CELERY_ONLY:
                problems.append((f"components.{field}", f"{field} is not used by LocalExecutor"))
                continue
            merged[field].update(spec.model_dump(exclude_none=True))
    return merged, problems


def check_spec(
    executor: Executor, components: dict[str, dict[str, Any]], min_workers: int, max_workers: int
) -> list[Problem]:
    """Problems of a merged spec: bounds, minimum memory, worker bounds."""
    problems: list[Problem] = []
    if min_workers > max_workers:
        problems.append(
            ("min_workers", f"min_workers ({min_workers}) exceeds max_workers ({max_workers})")
        )
    for name, spec in components.items():
        defaults = CATALOGUE[Component(name)]
        replicas = spec["replicas"]
        if not defaults.min_replicas <= replicas <= defaults.max_replicas:
            problems.append(
                (
                    f"components.{name}.replicas",
                    f"must be between {defaults.min_replicas} and {defaults.max_replicas}",
                )
            )
        if cpu_millicores(spec["cpu"]) in (None, 0):
            problems.append((f"components.{name}.cpu", "must be a positive CPU quantity"))
        memory = memory_bytes(spec["memory"])
        minimum = memory_bytes(defaults.min_memory)
        if memory is None or minimum is None or memory < minimum:
            problems.append(
                (f"components.{name}.memory", f"must be at least {defaults.min_memory} for {name}")
            )
    workers = components.get(Component.WORKERS.value)
    if executor is Executor.CELERY and workers is not None:
        if not min_workers <= workers["replicas"] <= max_workers:
            problems.append(
                (
                    "components.workers.replicas",
                    f"must be between min_workers ({min_workers}) and max_workers ({max_workers})",
                )
            )
    return problems
