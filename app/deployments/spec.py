"""The component spec of a deployment: which Airflow components run, how many, how big.

Defaults follow the official Airflow chart's component set (one replica of each; 600 s grace for
Celery workers is the runtime's business). The chart ships no resource requests; Sextant sets
modest ones so that a namespace quota can be derived from the spec, and refuses memory below what
each component needs to start at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Executor(StrEnum):
    CELERY = "CeleryExecutor"
    LOCAL = "LocalExecutor"


class Component(StrEnum):
    SCHEDULER = "scheduler"
    API_SERVER = "api_server"
    DAG_PROCESSOR = "dag_processor"
    TRIGGERER = "triggerer"
    WORKERS = "workers"
    FLOWER = "flower"
    PGBOUNCER = "pgbouncer"
    REDIS = "redis"
    STATSD = "statsd"


@dataclass(frozen=True, slots=True)
class ComponentDefaults:
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu: str
    memory: str
    min_memory: str


CATALOGUE: dict[Component, ComponentDefaults] = {
    Component.SCHEDULER: ComponentDefaults(1, 1, 4, "1000m", "2Gi", "512Mi"),
    Component.API_SERVER: ComponentDefaults(1, 1, 10, "500m", "1Gi", "512Mi"),
    Component.DAG_PROCESSOR: ComponentDefaults(1, 1, 4, "500m", "1Gi", "384Mi"),
    Component.TRIGGERER: ComponentDefaults(1, 0, 4, "500m", "1Gi", "256Mi"),
    Component.WORKERS: ComponentDefaults(1, 0, 100, "1000m", "2Gi", "512Mi"),
    Component.FLOWER: ComponentDefaults(1, 0, 1, "100m", "256Mi", "128Mi"),
    Component.PGBOUNCER: ComponentDefaults(1, 1, 3, "100m", "128Mi", "32Mi"),
    Component.REDIS: ComponentDefaults(1, 1, 1, "100m", "256Mi", "64Mi"),
    Component.STATSD: ComponentDefaults(1, 1, 1, "100m", "128Mi", "32Mi"),
}

CELERY_ONLY = frozenset({Component.WORKERS, Component.FLOWER, Component.REDIS})


def components_for(executor: Executor) -> list[Component]:
    """The components a deployment with this executor runs, in catalogue order."""
    return [c for c in Component if executor is Executor.CELERY or c not in CELERY_ONLY]


_CPU = re.compile(r"^(?P<n>\d+(\.\d{1,3})?)(?P<m>m?)$")
_MEMORY = re.compile(r"^(?P<n>\d+)(?P<unit>Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def cpu_millicores(quantity: str) -> int | None:
    """Millicores of a Kubernetes CPU quantity (`500m`, `1`, `1.5`), or None if malformed."""
    match = _CPU.match(quantity)
    if match is None:
        return None
    value = float(match["n"])
    return int(value) if match["m"] else round(value * 1000)


def memory_bytes(quantity: str) -> int | None:
    """Bytes of a Kubernetes memory quantity (`512Mi`, `2Gi`, `1G`), or None if malformed."""
    match = _MEMORY.match(quantity)
    if match is None:
        return None
    return int(match["n"]) * _MEMORY_UNITS[match["unit"]]
