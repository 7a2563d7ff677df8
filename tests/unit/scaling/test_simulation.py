"""Replaying a load timeline through a policy: changes, worker-minutes, the longest wait."""

from __future__ import annotations

from datetime import timedelta

from app.scaling.policy import Policy, Reason
from app.scaling.simulation import LoadPoint, replay

POLICY = Policy(1, 10, 4, up_limit=10, down_window=timedelta(seconds=60))


def trace(loads: list[float | None], step: float = 10) -> list[LoadPoint]:
    return [
        LoadPoint(i * step, None if v is None else v, None if v is None else 0)
        for i, v in enumerate(loads)
    ]


def test_a_burst_costs_two_changes_and_its_worker_minutes() -> None:
    # 6 points of 40 tasks (60 s), then idle for 2 minutes.
    result = replay(POLICY, trace([40] * 6 + [0] * 12), start_workers=1, step=10)
    assert result.replica_changes == 2
    assert [(c.at, c.workers, c.reason) for c in result.timeline] == [
        (0, 10, Reason.SCALE_UP), (110, 1, Reason.SCALE_DOWN),
    ]  # fmt: skip
    # 10 workers for 11 points (0..100 s), then 1 worker for 7 points.
    assert result.worker_seconds == (10 * 11 + 1 * 7) * 10
    assert result.peak_workers == 10
    assert result.longest_wait == 0


def test_startup_delay_makes_tasks_wait() -> None:
    result = replay(POLICY, trace([40] * 6), start_workers=1, step=10, startup=30)
    # New workers take tasks 30 s after the decision: t=0,10,20 wait (one step each).
    assert result.longest_wait == 30


def test_a_capped_maximum_makes_the_wait_last_as_long_as_the_overload() -> None:
    capped = Policy(1, 2, 4, up_limit=10)
    result = replay(capped, trace([40] * 6 + [0]), start_workers=1, step=10)
    assert result.longest_wait == 60


def test_missing_points_are_counted_and_change_nothing() -> None:
    result = replay(POLICY, trace([None, None, 8, None]), start_workers=1, step=10)
    assert result.fail_static_points == 3
    assert result.replica_changes == 1
