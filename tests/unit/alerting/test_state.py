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
