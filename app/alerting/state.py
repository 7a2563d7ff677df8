"""The life of one alert, per (deployment, rule): inactive → pending → firing → resolved.

A pure function of the previous state, one observation and the time, so that it is tested by a
table of cases. It mirrors Prometheus' semantics: the condition must hold for `for_seconds` before
an alert fires — it fires on the first evaluation at or after `for_seconds` — and an alert resolves
when the condition stops holding. An observation that could not be made (Prometheus unreachable)
changes nothing: no alert resolves because monitoring is down.

Evaluations are meant to be `interval` seconds apart, but a job started by a timer runs a few
milliseconds late, by a different amount each time: two evaluations nominally 30 s apart are
29.998 s apart by the wall clock, and a `for` of 30 s compared with that fires one evaluation
late. Prometheus avoids this by stamping each evaluation with its slot on a fixed grid; here the
pending time is counted in whole evaluation intervals (rounded), which is the same thing as long
as a run is less than half an interval late.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class AlertStatus(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Transition(StrEnum):
    """The changes that notify anyone."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Observation:
    """One evaluation's verdict for one deployment: is the condition met, and at what value."""

    met: bool
    value: float | None = None


UNKNOWN = None
"""An evaluation that could not be made; pass it as the observation to change nothing."""


@dataclass(frozen=True, slots=True)
class AlertState:
    """What is remembered of an alert between evaluations."""

    status: AlertStatus = AlertStatus.INACTIVE
    active_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    value: float | None = None


def pending_for(since: datetime, now: datetime, interval: float) -> float:
    """How long a condition has held, on the evaluation grid of `interval` seconds (0: exact)."""
    elapsed = (now - since).total_seconds()
    if interval <= 0:
        return elapsed
    return round(elapsed / interval) * interval


def step(
    state: AlertState,
    observation: Observation | None,
    now: datetime,
    for_seconds: float,
    interval: float = 0.0,
) -> tuple[AlertState, Transition | None]:
    """The next state after an observation, and the transition to notify, if any."""
    if observation is None:
        return state, None
    if not observation.met:
        if state.status is AlertStatus.FIRING:
            resolved = replace(state, status=AlertStatus.RESOLVED, resolved_at=now,
                               value=observation.value)  # fmt: skip
            return resolved, Transition.RESOLVED
        if state.status is AlertStatus.PENDING:
            return AlertState(AlertStatus.INACTIVE, value=observation.value), None
        return replace(state, value=observation.value), None
    if state.status is AlertStatus.FIRING:
        return replace(state, value=observation.value), None
    since = state.active_since if state.status is AlertStatus.PENDING else now
    assert since is not None
    if pending_for(since, now, interval) >= for_seconds:
        fired = AlertState(AlertStatus.FIRING, active_since=since, fired_at=now,
                           value=observation.value)  # fmt: skip
        return fired, Transition.FIRING
    return AlertState(AlertStatus.PENDING, active_since=since, value=observation.value), None
