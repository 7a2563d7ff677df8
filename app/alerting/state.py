"""The life of one alert, per (deployment, rule): inactive → pending → firing → resolved.

A pure function of the previous state, one observation and the time, so that it is tested by a
table of cases. It mirrors Prometheus' semantics: the condition must hold for `for_seconds` before
an alert fires, and an alert resolves when the condition stops holding. An observation that could
not be made (Prometheus unreachable) changes nothing: no alert resolves because monitoring is down.
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


def step(
    state: AlertState, observation: Observation | None, now: datetime, for_seconds: float
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
    if (now - since).total_seconds() >= for_seconds:
        fired = AlertState(AlertStatus.FIRING, active_since=since, fired_at=now,
                           value=observation.value)  # fmt: skip
        return fired, Transition.FIRING
    return AlertState(AlertStatus.PENDING, active_since=since, value=observation.value), None
