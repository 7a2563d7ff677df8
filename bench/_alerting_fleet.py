"""A synthetic fleet of Airflow deployments as Prometheus would have scraped it, for backfilling.

`write_openmetrics` writes what 1,000 (by default) deployments' StatsD exporters would have
exposed, sample by sample, named and labelled as deploy/statsd/mappings.yml and Sextant's
scrape targets make them (`workspace`, `deployment` attached at ingest, plus `job` and
`instance`), for `promtool tsdb create-blocks-from openmetrics`:

    airflow_scheduler_heartbeat / _dag_processor_ / _triggerer_ counters (+3 every 15 s scrape,
        i.e. a heartbeat every 5 s)          45 min of history (the rules look back 30 min)
    airflow_ti_finish{dag_id,task_id,state}  counters, one task finishing per minute, 45 min
    airflow_dagrun_schedule_delay_bucket/_sum/_count{dag_id}  one DAG run per minute, 22 min
    up, airflow_dag_processing_import_errors, airflow_executor_queued_tasks,
    airflow_pool_open_slots / _scheduled_slots{pool}, airflow_triggerer_capacity_left /
    airflow_triggers_running{hostname}       gauges, 22 min

Samples run from the past up to `future` seconds *after* the moment of generation: the rules
compare `time()` with the data, so a fleet whose data ended at generation time would look
stalled a minute into the benchmark. Prometheus answers an instant query at time t from samples
at or before t, so the later samples are invisible until their time comes, exactly like samples
not scraped yet. (Prometheus refuses to ingest into a time range covered by a block, which does
not matter here: nothing is scraped.)

Some deployments are given problems, disjoint sets chosen with a fixed seed, so that the rules
have something to find and the two evaluation methods can be checked against each other and
against this ground truth (`Fleet.expected`):

    stalled scheduler (heartbeat flat for 2-15 min)   AirflowSchedulerHeartbeatMissing
    stalled DAG processor                            AirflowDagProcessorHeartbeatMissing
    late DAG runs (400 s schedule delay)             AirflowSchedulerLagHigh
    import errors                                    AirflowDagImportErrors
    a full pool with scheduled tasks                 AirflowTasksStarving
    half the task instances failing                  AirflowTaskFailureRateHigh
    an almost full triggerer                         AirflowTriggererCapacityLow
    exporter down (up 0, nothing else for 8 min)     AirflowMetricsAbsent
    (enough stalled schedulers)                      AirflowManySchedulersUnhealthy (fleet)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.alerting.measure import for_deployment

SCRAPE = 15  # seconds between two samples of a series
LONG_HISTORY = 35 * 60  # heartbeats and task counters: the rules look back 30 min
SHORT_HISTORY = 12 * 60  # gauges and the schedule-delay histogram: rate over 10 min
HISTOGRAM = "airflow_dagrun_schedule_delay"
DELAY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PROBLEMS = {
    # problem: (share of the fleet, rule it should raise)
    "stalled": (0.05, "AirflowSchedulerHeartbeatMissing"),
    "processor_stalled": (0.01, "AirflowDagProcessorHeartbeatMissing"),
    "late": (0.05, "AirflowSchedulerLagHigh"),
    "import_errors": (0.02, "AirflowDagImportErrors"),
    "starving": (0.01, "AirflowTasksStarving"),
    "failing": (0.01, "AirflowTaskFailureRateHigh"),
    "triggerer_full": (0.01, "AirflowTriggererCapacityLow"),
    "down": (0.005, "AirflowMetricsAbsent"),
}
FLEET_RULE = "AirflowManySchedulersUnhealthy"


@dataclass
class Fleet:
    """The deployments, who has which problem, and what the rules should find."""

    deployments: list[tuple[str, str]]  # (workspace, deployment)
    problems: dict[str, set[str]] = field(default_factory=dict)
    generated_at: int = 0
    future: int = 0
    lines: int = 0

    @property
    def expected(self) -> dict[str, set[str]]:
        """Per rule, the deployments whose condition holds (the fleet rule: `{"fleet"}`)."""
        found = {rule: set(self.problems[name]) for name, (_, rule) in PROBLEMS.items()}
        found[FLEET_RULE] = {"fleet"} if len(self.problems["stalled"]) >= 3 else set()
        return found


def build_fleet(deployments: int, per_workspace: int, seed: int = 7) -> Fleet:
    """Name the deployments and assign problems (disjoint sets) deterministically."""
    names = [
        (f"team-{index // per_workspace:03d}", f"dep-{index:04d}") for index in range(deployments)
    ]
    pool = [name for _, name in names]
    random.Random(seed).shuffle(pool)
    fleet = Fleet(names)
    start = 0
    for problem, (share, _) in PROBLEMS.items():
        count = max(1, round(share * deployments))
        fleet.problems[problem] = set(pool[start : start + count])
        start += count
    return fleet


def write_openmetrics(fleet: Fleet, path: Path, now: int, future: int, seed: int = 7) -> None:
    """Write the fleet's samples from the past until `now + future` (Unix seconds)."""
    rng = random.Random(seed)
    fleet.generated_at, fleet.future = now, future
    end = now + future
    lines = 0
    with path.open("w", buffering=1 << 20) as out:
        for index, (workspace, deployment) in enumerate(fleet.deployments):
            phase = rng.randrange(SCRAPE)  # each target is scraped at its own offset
            base = (
                f'workspace="{workspace}",deployment="{deployment}",job="sextant-airflow",'
                f'instance="10.{index // 250}.{index % 250}.10:9102"'
            )
            for line in _deployment(fleet, deployment, base, rng, phase, now, end):
                out.write(line)
                lines += 1
        out.write("# EOF\n")
    fleet.lines = lines


def _deployment(
    fleet: Fleet, name: str, base: str, rng: random.Random, phase: int, now: int, end: int
) -> Iterator[str]:
    problems = {problem for problem, members in fleet.problems.items() if name in members}
    # An exporter that went down 8 min ago: `up` is 0 since, every other series ended then.
    last = now - 8 * 60 if "down" in problems else end
    long = range(now - LONG_HISTORY + phase, last + 1, SCRAPE)
    short = range(now - SHORT_HISTORY + phase, last + 1, SCRAPE)

    stall_at = now - rng.randrange(120, 900) if "stalled" in problems else end + 1
    processor_stall_at = now - rng.randrange(120, 900) if "processor_stalled" in problems else None
    for metric, stop in (
        ("airflow_scheduler_heartbeat", stall_at),
        ("airflow_dag_processor_heartbeat", processor_stall_at or end + 1),
        ("airflow_triggerer_heartbeat", end + 1),
    ):
        start = rng.randrange(10_000, 100_000)
        for t in long:
            beats = (min(t, stop) - long.start) // 5
            yield f'{metric}{{{base},type="counter"}} {start + beats} {t}\n'

    failing = "failing" in problems
    for state in ("success", "failed"):
        labels = f'{base},dag_id="etl",task_id="load",state="{state}"'
        for t in long:
            runs = (t - long.start) // 60  # one task instance finishes per minute
            failed = runs // 2 if failing else 0
            count = failed if state == "failed" else runs - failed
            yield f"airflow_ti_finish{{{labels}}} {count} {t}\n"

    delay = 400.0 if "late" in problems else 2.0
    history = rng.randrange(1_000, 5_000)
    for bound in (*DELAY_BUCKETS, "+Inf"):
        le = "+Inf" if bound == "+Inf" else f"{float(bound)}"
        inside = bound == "+Inf" or delay <= float(bound)
        for t in short:
            runs = history + (t - short.start) // 60
            value = runs if inside else 0
            yield f'{HISTOGRAM}_bucket{{{base},dag_id="etl",le="{le}"}} {value} {t}\n'
    for t in short:
        runs = history + (t - short.start) // 60
        yield f'{HISTOGRAM}_count{{{base},dag_id="etl"}} {runs} {t}\n'
        yield f'{HISTOGRAM}_sum{{{base},dag_id="etl"}} {runs * delay} {t}\n'

    gauges = {
        "airflow_dag_processing_import_errors": 2 if "import_errors" in problems else 0,
        "airflow_executor_queued_tasks": rng.randrange(0, 5),
        'airflow_pool_open_slots{pool="default_pool"}': 0 if "starving" in problems else 128,
        'airflow_pool_scheduled_slots{pool="default_pool"}': 7 if "starving" in problems else 0,
        'airflow_triggerer_capacity_left{hostname="triggerer-0"}': (
            20 if "triggerer_full" in problems else 990
        ),
        'airflow_triggers_running{hostname="triggerer-0"}': (
            980 if "triggerer_full" in problems else 10
        ),
    }
    for selector, value in gauges.items():
        metric, _, extra = selector.partition("{")
        labels = f"{base},{extra.rstrip('}')}" if extra else base
        for t in short:
            yield f"{metric}{{{labels}}} {value} {t}\n"
    for t in range(short.start, end + 1, SCRAPE):
        up = 0 if "down" in problems and t > last else 1
        yield f"up{{{base}}} {up} {t}\n"


def inject_deployment(expr: str, deployment: str) -> str:
    """`expr` restricted to one deployment's series: what a per-deployment rule (one Prometheus
    rule, or one KEDA query, per deployment) looks like (Sextant's own `for_deployment`)."""
    return for_deployment(expr, deployment)
