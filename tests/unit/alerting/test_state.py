"""The alert state machine, as a table of evaluations over time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.alerting.state import AlertState, AlertStatus, Observation, Transition, step

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MET = Observation(met=True, value=120.0)
CLEAR = Observation(met=False, value=3.0)

Row = tuple[int, Observation | None, AlertStatus, Transition | None]


def run(rows: list[Row], for_seconds: float) -> None:
    state = AlertState()
    for seconds, observation, status, transition in rows:
        state, happened = step(state, observation, T0 + timedelta(seconds=seconds), for_seconds)
        assert (seconds, state.status, happened) == (seconds, status, transition)


@pytest.mark.parametrize(
    ("rows", "for_seconds"),
    [
        pytest.param(
            [(0, MET, AlertStatus.PENDING, None), (30, MET, AlertStatus.PENDING, None),
             (60, MET, AlertStatus.FIRING, Transition.FIRING),
             (75, MET, AlertStatus.FIRING, None),
             (90, CLEAR, AlertStatus.RESOLVED, Transition.RESOLVED),
             (105, CLEAR, AlertStatus.RESOLVED, None)],
            60, id="fires-after-for-then-resolves",
        ),
        pytest.param(
            [(0, MET, AlertStatus.FIRING, Transition.FIRING)], 0, id="for-zero-fires-at-once",
        ),
        pytest.param(
            [(0, MET, AlertStatus.PENDING, None), (30, CLEAR, AlertStatus.INACTIVE, None),
             (45, MET, AlertStatus.PENDING, None), (90, MET, AlertStatus.PENDING, None),
             (105, MET, AlertStatus.FIRING, Transition.FIRING)],
            60, id="a-dip-restarts-the-for-clock",
        ),
        pytest.param(
            [(0, MET, AlertStatus.FIRING, Transition.FIRING),
             (15, None, AlertStatus.FIRING, None), (30, None, AlertStatus.FIRING, None),
             (45, MET, AlertStatus.FIRING, None)],
            0, id="unknown-observations-never-resolve",
        ),
        pytest.param(
            [(0, MET, AlertStatus.PENDING, None), (30, None, AlertStatus.PENDING, None),
             (60, MET, AlertStatus.FIRING, Transition.FIRING)],
            60, id="unknown-keeps-pending-clock",
        ),
        pytest.param(
            [(0, MET, AlertStatus.FIRING, Transition.FIRING),
             (10, CLEAR, AlertStatus.RESOLVED, Transition.RESOLVED),
             (20, MET, AlertStatus.FIRING, Transition.FIRING)],
            0, id="fires-again-after-resolving",
        ),
    ],
)  # fmt: skip
def test_alert_lifecycle(rows: list[Row], for_seconds: float) -> None:
    run(rows, for_seconds)


def test_firing_state_remembers_when_and_the_latest_value() -> None:
    state, _ = step(AlertState(), Observation(True, 61.0), T0, 0)
    state, _ = step(state, Observation(True, 75.0), T0 + timedelta(seconds=15), 0)
    assert state.fired_at == T0
    assert state.value == 75.0
    resolved, _ = step(state, Observation(False, 2.0), T0 + timedelta(seconds=30), 0)
    assert resolved.resolved_at == T0 + timedelta(seconds=30)
    assert resolved.fired_at == T0


def late_by(
    milliseconds: list[int], interval: float, for_seconds: float, grid: float | None = None
) -> list[bool]:
    """Evaluations `interval` apart, each started this late; which of them fired."""
    state = AlertState()
    fired: list[bool] = []
    for index, late in enumerate(milliseconds):
        at = T0 + timedelta(seconds=index * interval, milliseconds=late)
        state, happened = step(state, MET, at, for_seconds, interval if grid is None else grid)
        fired.append(happened is Transition.FIRING)
    return fired


def test_for_fires_on_the_first_evaluation_at_or_after_it_despite_timer_jitter() -> None:
    # Pending at 0 (3 ms late); the evaluation at 30 s runs 1 ms late: 29.998 s by the clock.
    assert late_by([3, 0, 9, 4, 0, 2, 1, 0], 5.0, 30.0) == [False] * 6 + [True, False]


def test_for_that_is_not_a_multiple_of_the_interval_waits_for_the_next_evaluation() -> None:
    # for 30 s, evaluations every 7 s: 28 s is too early, 35 s is the first at or after 30 s.
    assert late_by([0, 0, 0, 0, 0, 0], 7.0, 30.0) == [False] * 5 + [True]


def test_without_an_interval_the_wall_clock_is_compared_exactly() -> None:
    # The old behaviour, kept for callers without a grid: fires one evaluation late.
    assert late_by([3, 0, 9, 4, 0, 2, 1, 0], 5.0, 30.0, grid=0.0) == [False] * 7 + [True]
