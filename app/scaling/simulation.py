"""Replay a load timeline through a policy: what the decision loop would have done, and at what
cost. Pure: the what-if endpoint feeds it Prometheus' `query_range`, benchmarks a synthetic trace.

The load is observed, not simulated (queued + running as it really was), so the answer is a
measure of the policy, not a queueing model: a worker-minute is a minute of one worker that had
started; "waiting for a slot" is a stretch of time when the observed load exceeded the slots of
the workers that had started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.scaling.policy import (
    Damping,
    Decision,
    LoadSample,
    Observation,
    Policy,
    Reason,
    Recommendation,
    decide,
)


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """The load at one instant; None where the series was missing."""

    at: float  # Unix seconds
    queued: float | None
    running: float | None


@dataclass(frozen=True, slots=True)
class Change:
    at: float
    load: float | None
    workers: int
    reason: Reason


@dataclass(slots=True)
class Replay:
    timeline: list[Change] = field(default_factory=list)
    replica_changes: int = 0
    worker_seconds: float = 0.0
    longest_wait: float = 0.0
    peak_workers: int = 0
    fail_static_points: int = 0


def replay(
    policy: Policy,
    points: Sequence[LoadPoint],
    start_workers: int,
    step: float,
    startup: float = 0.0,
    max_age: float = float("inf"),
) -> Replay:
    """Every decision over `points` (one per step), from `start_workers`."""
    result = Replay(peak_workers=start_workers)
    workers = start_workers
    history: tuple[Recommendation, ...] = ()
    damping = Damping()
    samples: tuple[LoadSample, ...] = ()
    # When each running worker started; those younger than `startup` take no task yet.
    started: list[float] = [float("-inf")] * start_workers
    waiting_since: float | None = None
    for index, point in enumerate(points):
        now = datetime.fromtimestamp(point.at, UTC)
        observation = Observation(point.queued, point.running)
        decision: Decision = decide(
            policy, workers, observation, history, now, max_age, damping, samples
        )
        history, damping, samples = decision.history, decision.damping, decision.samples
        if decision.recommended is None:
            result.fail_static_points += 1
        if decision.desired != workers or index == 0:
            result.timeline.append(Change(point.at, decision.load, decision.desired,
                                          decision.reason))  # fmt: skip
        if decision.desired != workers:
            result.replica_changes += 1
            if decision.desired > workers:
                started += [point.at] * (decision.desired - workers)
            else:
                # The oldest workers stay (the loop removes idle ones; which is unknowable here).
                started = started[: decision.desired]
            workers = decision.desired
        result.peak_workers = max(result.peak_workers, workers)
        result.worker_seconds += workers * step
        ready = sum(1 for t in started if point.at - t >= startup)
        load = decision.load
        if load is not None and load > ready * policy.tasks_per_worker:
            waiting_since = point.at if waiting_since is None else waiting_since
            result.longest_wait = max(result.longest_wait, point.at + step - waiting_since)
        else:
            waiting_since = None
    return result


def steps(start: datetime, end: datetime, step: timedelta) -> int:
    """How many points a range query returns between start and end."""
    return int((end - start) / step) + 1
