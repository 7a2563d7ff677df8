"""The load of every deployment from one fleet-wide query (the alerting measure contract).

One PromQL query answers for the whole fleet, every series labelled `deployment` and `measure`:

    queued, running        the executor's gauges (emitted every scheduler loop, ~1 s)
    age                    seconds since the running gauge was last scraped
    queued_in_queue,       the task-instance gauges per Celery queue (emitted every 30 s), for
    running_in_queue       policies that count one queue only

What each shape of answer means is decided here, explicitly: a deployment without a series has
no value (the loop fails static); NaN samples count as absent but are remembered, so the reason
says "invalid" rather than "missing"; several series of one measure (HA schedulers that the
exporter did not merge) count the highest; a queue without series has no task (Airflow emits
per-queue gauges only for queues that have task instances) as long as the executor's gauges are
there to prove the deployment is reporting.

Scaling down also reads who is busy: Flower's per-worker gauges, scraped with the same identity
labels, for every deployment that scales down in a round in one more query
(`worker_load_query`, `worker_loads`). Only what is known counts: a worker that Flower does not
report online, whose sample is older than the freshness limit, or whose value is NaN has no load,
and a worker without a load is never named idle (on Kubernetes its pod gets no deletion cost).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.integrations.prometheus import RangeSeries, Sample
from app.observability.promql import Matcher
from app.runtime.base import WorkerLoad
from app.scaling.policy import Observation
from app.scaling.simulation import LoadPoint

MEASURES = ("queued", "running", "age", "queued_in_queue", "running_in_queue")
_MEASURES = frozenset(MEASURES)
_PER_QUEUE = frozenset({"queued_in_queue", "running_in_queue"})


def _labelled(expr: str, measure: str) -> str:
    return f'label_replace({expr}, "measure", "{measure}", "", "")'


def load_query(selector: str = "") -> str:
    """The fleet's load in one query (`selector` narrows it, e.g. to one deployment)."""
    inner = f"{{{selector}}}" if selector else ""
    parts = [
        _labelled(f"max by (deployment) (airflow_executor_queued_tasks{inner})", "queued"),
        _labelled(f"max by (deployment) (airflow_executor_running_tasks{inner})", "running"),
        _labelled(
            f"time() - min by (deployment) (timestamp(airflow_executor_running_tasks{inner}))",
            "age",
        ),
        _labelled(f"sum by (deployment, queue) (airflow_ti_queued{inner})", "queued_in_queue"),
        _labelled(f"sum by (deployment, queue) (airflow_ti_running{inner})", "running_in_queue"),
    ]
    return "\n  or ".join(parts)


FLEET_LOAD_QUERY = load_query()


@dataclass(frozen=True, slots=True)
class FleetLoad:
    """Per deployment: each measure's value, per queue values, and who sent NaN."""

    values: Mapping[str, Mapping[str, float]]
    per_queue: Mapping[str, Mapping[tuple[str, str], float]]
    invalid: frozenset[str]

    def observation(self, deployment: str, queue: str | None) -> Observation:
        """The observation the policy decides from."""
        values = self.values.get(deployment, {})
        queued, running = values.get("queued"), values.get("running")
        if deployment in self.invalid and (queued is None or running is None):
            return Observation(math.nan, math.nan, values.get("age"))
        if queue is not None and queued is not None and running is not None:
            # The executor's gauges prove the deployment reports; an absent queue is idle.
            mine = self.per_queue.get(deployment, {})
            queued = mine.get(("queued_in_queue", queue), 0.0)
            running = mine.get(("running_in_queue", queue), 0.0)
        return Observation(queued, running, values.get("age"))


def fleet_load(samples: Iterable[Sample]) -> FleetLoad:
    """Reduce the fleet query's answer to per-deployment measures: per deployment and measure the
    highest finite value, as `alerting.measure.per_deployment` reduces one measure, but for all
    measures in one pass (a fleet's answer has three series per deployment and is read every
    round; grouping by measure first and reducing each took twice as long)."""
    values: dict[str, dict[str, float]] = {}
    invalid: set[str] = set()
    per_queue: dict[str, dict[tuple[str, str], float]] = {}
    for sample in samples:
        labels = sample.labels
        measure, deployment = labels.get("measure"), labels.get("deployment")
        if not deployment or measure not in _MEASURES:
            continue
        value = sample.value
        if not math.isfinite(value):
            invalid.add(deployment)
            continue
        if measure in _PER_QUEUE:
            queue = labels.get("queue")
            if queue:
                per_queue.setdefault(deployment, {})[(measure, queue)] = value
            continue
        mine = values.get(deployment)
        if mine is None:
            values[deployment] = {measure: value}
        elif value > mine.get(measure, -math.inf):
            mine[measure] = value
    return FleetLoad(values, per_queue, frozenset(invalid))


def load_points(
    series: Iterable[RangeSeries], queue: str | None, start: float, end: float, step: float
) -> list[LoadPoint]:
    """One deployment's range answer of `load_query` as a timeline, a point every `step` from
    `start` to `end` (None where nothing was there)."""
    table: dict[int, list[Sample]] = {}
    for one in series:
        for point in one.points:
            key = round((point.timestamp - start) / step)
            table.setdefault(key, []).append(Sample(one.labels, point.value))
    points = []
    for key in range(int((end - start) / step + 1e-9) + 1):
        at = start + key * step
        observed = fleet_load(table.get(key, ()))
        deployments = sorted({*observed.values, *observed.invalid})
        if not deployments:
            points.append(LoadPoint(at, None, None))
            continue
        seen = observed.observation(deployments[0], queue)
        points.append(LoadPoint(at, seen.queued, seen.running))
    return points


# Flower's gauges (flower/events.py, Flower 2.x), labelled `worker="<node>@<host>"`: the tasks a
# worker executes, from its heartbeats (every 2 s), and whether it is online (0 after it said
# goodbye, which Celery does as its warm shutdown starts).
FLOWER_RUNNING = "flower_worker_number_of_currently_executing_tasks"
FLOWER_ONLINE = "flower_worker_online"
# Celery's node name when none is given (`celery@<hostname>`), as in every worker pod.
CELERY_DEFAULT_NODE = "celery"
# A DNS-1123 name (every deployment's) goes into the regex as it is; anything else is escaped.
_PLAIN_NAME = re.compile(r"[a-z0-9-]+")


def worker_load_query(deployments: Iterable[str], max_age: float) -> str:
    """Running tasks per online worker of these deployments, from samples at most `max_age`
    seconds old, in one query."""
    names = sorted(set(deployments))
    pattern = "|".join(n if _PLAIN_NAME.fullmatch(n) else re.escape(n) for n in names)
    selector = f"{{{Matcher('deployment', '=~', pattern).text()}}}"
    running = f"{FLOWER_RUNNING}{selector}"
    return (
        "max by (deployment, worker) (\n"
        f"  {running}\n"
        f"  and ({FLOWER_ONLINE}{selector} == 1)\n"
        f"  and (time() - timestamp({running}) <= {max_age:g})\n"
        ")"
    )


def worker_name(celery: str) -> str:
    """The runtime's name of a Celery worker `<node>@<host>`: the host (the pod) under Celery's
    default node name, else the node (the local runtime's `workers-<n>@<deployment>`)."""
    node, at, host = celery.partition("@")
    if not at:
        return celery
    return host if node == CELERY_DEFAULT_NODE else node


def worker_loads(samples: Iterable[Sample]) -> dict[str, list[WorkerLoad]]:
    """Per deployment, the running tasks of each worker the answer knows (the highest when
    several Flowers report one worker; NaN, negative and unlabelled samples count as unknown)."""
    busiest: dict[str, dict[str, int]] = {}
    for sample in samples:
        deployment, celery = sample.labels.get("deployment"), sample.labels.get("worker")
        if not deployment or not celery:
            continue
        if not math.isfinite(sample.value) or sample.value < 0:
            continue
        workers = busiest.setdefault(deployment, {})
        name = worker_name(celery)
        workers[name] = max(workers.get(name, 0), math.ceil(sample.value))
    return {
        deployment: [WorkerLoad(name, tasks) for name, tasks in sorted(workers.items())]
        for deployment, workers in busiest.items()
    }
