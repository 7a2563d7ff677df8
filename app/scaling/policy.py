"""How many workers a deployment should run: a pure function of one observation, the policy,
the recent recommendations and the time.

The maths follows KEDA's `AverageValue` and the HPA's behaviour, with Celery's numbers:

1. fail static: without a complete, fresh, finite observation nothing changes (never scale down
   on missing data) and the reason says what was wrong;
2. recommendation: `ceil((queued + running) / tasks_per_worker)`, clamped to [min, max];
3. scale-down stabilization: going down, only to the highest recommendation of the window
   (HPA's "highest recommendation for the last 300 s"), and in one step: while the window still
   holds the load's way down (its older half recommends more than its newer half) the workers
   stay, for at most half a window, so that a load falling over a minute or two is followed by
   one change instead of a staircase of them;
4. flap damping: workers that must come back within a window of having gone down are a flap;
   each flap doubles the window (up to `down_window_max`), and each window without one halves
   it again (down to `down_window`). A load that bursts every few minutes then keeps its burst
   capacity instead of paying a scale-up and a scale-down per burst; a quiet load keeps the
   short window. Capacity that the window kept unneeded for `NEAR_FLAP` of its length and that
   is then needed again is a near flap, and counts as one: bursts spaced close to the window
   grow it before a longer gap between them costs a scale-down and a scale-up;
5. scale-up limit: at most `up_limit` pods, or `up_limit` percent of the current workers (at
   least one), per decision;
6. start-up backlog guard: within `up_confirm` of a scale-up, a further one waits for the next
   sample of the load to want it too. Tasks queue while new workers start; when the next batch
   arrives that backlog is still there and asks for workers that would start after it has
   drained. A scale-up that only the rising-load projection (7.) asks for, with nothing queued
   and the load itself fitting the workers, waits for the next sample too, at any time: one
   noisy rise is no ramp. A queue deeper than all the current workers' slots is acted on at once
   (the guard never delays a burst), and the rest of a step cut by the limit follows without
   waiting;
7. rising load: when the load rose over each of the last two samples, the recommendation counts
   the load expected by the time a worker asked for now takes tasks (the slower of the two rises,
   over `startup` plus one sample interval), so a load that ramps up is followed in one or two
   steps instead of a staircase of them;
8. no scale-down into a rising load: while the newest sample is above the lowest of the last
   ones (taken within `RISING_SPAN`), the workers stay; a level that starts to rise just as the
   window lets go of an older peak is not first scaled down and then up again.

No I/O and no clock of its own: the caller passes `now` (and the observation says how old its
sample is), so tests and the what-if simulator replay any timeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import NamedTuple


class LimitKind(StrEnum):
    PODS = "pods"
    PERCENT = "percent"


class Reason(StrEnum):
    """Why a decision came out as it did (the label of the decision counter)."""

    SCALE_UP = "scale_up"
    SCALE_UP_LIMITED = "scale_up_limited"
    SCALE_DOWN = "scale_down"
    STEADY = "steady"
    HELD_BY_WINDOW = "held_by_window"
    # A scale-up soon after another, waiting for the next sample to want it too.
    HELD_FOR_CONFIRMATION = "held_for_confirmation"
    # Fail static: nothing changes.
    NO_DATA = "no_data"
    PARTIAL_DATA = "partial_data"
    INVALID_DATA = "invalid_data"
    STALE_DATA = "stale_data"
    METRICS_UNAVAILABLE = "metrics_unavailable"
    # Set by the service, not by this module.
    APPLY_FAILED = "apply_failed"


FAIL_STATIC = frozenset(
    {
        Reason.NO_DATA,
        Reason.PARTIAL_DATA,
        Reason.INVALID_DATA,
        Reason.STALE_DATA,
        Reason.METRICS_UNAVAILABLE,
    }
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective policy of one deployment (bounds already intersected with the spec's)."""

    min_workers: int
    max_workers: int
    tasks_per_worker: int
    up_limit: int = 10
    up_limit_kind: LimitKind = LimitKind.PODS
    down_window: timedelta = timedelta(seconds=300)
    # The longest the window grows to under flap damping (no growth if not above down_window).
    down_window_max: timedelta = timedelta(seconds=1200)
    # How long after a scale-up a further one waits for the next sample (0: never; a scale-up
    # only the rising-load projection asks for waits for it regardless).
    up_confirm: timedelta = timedelta(seconds=120)
    # How long a new worker takes to take tasks: how far ahead a rising load is projected.
    startup: timedelta = timedelta(seconds=30)


# Two observations are of one sample when their sample times are this close (the times are
# derived from each query's answer, so they differ by the query's jitter).
SAME_SAMPLE = 1.0
# Capacity the window kept unneeded for this share of its length before it was needed again is
# a near flap: the window is shorter than about 2.5 times the gaps between the load's peaks, so
# the next longer gap would cost a scale-down and a scale-up (bench/flapping: 0.5 left more
# seeds flapping, 0.3 no fewer).
NEAR_FLAP = 0.4
# How far back samples count when asking whether the load is rising (four scrapes at 15 s).
RISING_SPAN = 60.0


class LoadSample(NamedTuple):
    """The load of one sample and when it was taken (Unix seconds)."""

    at: float
    load: float


@dataclass(frozen=True, slots=True)
class Damping:
    """What the loop remembers besides the window's recommendations (all None at first): flap
    damping and the start-up guard."""

    # The scale-down window now in force; None: the policy's `down_window`.
    window: timedelta | None = None
    # When the workers last went down, last flapped (the window grew), and when the window
    # was last halved for calm.
    last_down: datetime | None = None
    last_flap: datetime | None = None
    halved_at: datetime | None = None
    # Since when a scale-down has been held because the window still holds the way down.
    held_since: datetime | None = None
    # When the workers last went up to a whole recommendation (the start-up guard runs from
    # there), and the sample time of a scale-up waiting for the next sample.
    last_up: datetime | None = None
    pending_at: datetime | None = None


class Observation(NamedTuple):
    """The load of one deployment as the fleet query saw it; None where a series was missing."""

    queued: float | None
    running: float | None
    # Seconds since the newest sample of the load was scraped; None if unknown (then each
    # observation counts as a new sample).
    age: float | None = None
    # The metric source could not be asked at all.
    unavailable: bool = False


class Recommendation(NamedTuple):
    at: datetime
    workers: int


class Decision(NamedTuple):
    desired: int
    # The clamped ceil(load / tasks_per_worker) of this round; None when failing static.
    recommended: int | None
    reason: Reason
    # The recommendations still inside the window, this round's included.
    history: tuple[Recommendation, ...] = ()
    load: float | None = None
    damping: Damping = Damping()
    # The tasks a rising load was expected to add, counted in the recommendation.
    ahead: float = 0.0
    # The last three distinct samples, newest first (for the rising-load projection).
    samples: tuple[LoadSample, ...] = ()

    @property
    def changes(self) -> bool:
        """Whether this decision changes the number of workers (against `current`)."""
        return self.reason in (Reason.SCALE_UP, Reason.SCALE_UP_LIMITED, Reason.SCALE_DOWN)


def fail_static_reason(observation: Observation, max_age: float) -> Reason | None:
    """Why the observation cannot be used, or None when it can."""
    if observation.unavailable:
        return Reason.METRICS_UNAVAILABLE
    queued, running = observation.queued, observation.running
    if queued is None or running is None:
        return Reason.NO_DATA if queued is None and running is None else Reason.PARTIAL_DATA
    # NaN fails both comparisons; infinities fail the upper one.
    if not (0 <= queued < math.inf and 0 <= running < math.inf):
        return Reason.INVALID_DATA
    age = observation.age
    if age is not None and (not math.isfinite(age) or age > max_age):
        return Reason.STALE_DATA
    return None


def compress(window: Sequence[Recommendation]) -> tuple[Recommendation, ...]:
    """The window without the recommendations that can never be its maximum again: those
    followed by one at least as high (they leave the window first). Same maxima, fewer rows."""
    kept: list[Recommendation] = []
    for recommendation in sorted(window, key=lambda r: r.at):
        while kept and kept[-1].workers <= recommendation.workers:
            kept.pop()
        kept.append(recommendation)
    return tuple(kept)


def _pushed(
    window: tuple[Recommendation, ...], newest: Recommendation
) -> tuple[Recommendation, ...]:
    """`compress` of the window plus its newest recommendation, in the usual case (the window
    already compressed: older first, each higher than the next) without sorting it again."""
    if len(window) > 1 and any(a.at > b.at or a.workers <= b.workers for a, b in pairwise(window)):
        return compress((*window, newest))
    kept = len(window)
    while kept and window[kept - 1].workers <= newest.workers and window[kept - 1].at <= newest.at:
        kept -= 1
    return (*window[:kept], newest)


def clamp(workers: int, policy: Policy) -> int:
    """`workers` within the policy's bounds."""
    return max(policy.min_workers, min(policy.max_workers, workers))


def recommend(load: float, policy: Policy) -> int:
    """Workers for `load` tasks (queued + running), within bounds."""
    # A tiny tolerance: 32.0000001 / 16 is float noise, not a third worker.
    raw = math.ceil(load / policy.tasks_per_worker - 1e-9) if load > 0 else 0
    return clamp(raw, policy)


def up_step(current: int, policy: Policy) -> int:
    """The most workers one decision may add."""
    if policy.up_limit_kind is LimitKind.PERCENT:
        return max(1, math.ceil(current * policy.up_limit / 100))
    return max(1, policy.up_limit)


def settle(damping: Damping, policy: Policy, now: datetime) -> Damping:
    """The damping in force at `now`: the window within the policy's bounds, halved once for
    every whole window the workers have stayed down since the last flap."""
    if damping.window is None:
        return damping  # the policy's own window: nothing to halve
    base = policy.down_window
    window = min(max(base, policy.down_window_max), max(base, damping.window or base))
    halved = damping.halved_at
    down, flap = damping.last_down, damping.last_flap
    if down is not None and (flap is None or down > flap):
        clock = max(down, halved) if halved is not None else down
        while window > base and now - clock >= window:
            clock += window
            window = max(base, window / 2)
            halved = clock
    kept = None if window == base else window
    if kept == damping.window and halved == damping.halved_at:
        return damping
    return replace(damping, window=kept, halved_at=halved)


def sampled(samples: tuple[LoadSample, ...], newest: LoadSample) -> tuple[LoadSample, ...]:
    """The last three distinct samples once `newest` is seen (a repeat replaces its twin)."""
    if samples and abs(samples[0].at - newest.at) < SAME_SAMPLE:
        return (newest, *samples[1:])
    return (newest, *samples[:2])


def ahead(samples: Sequence[LoadSample], startup: timedelta) -> float:
    """The tasks a load rising over each of the last two samples is expected to add by the time
    a worker asked for now takes tasks (the slower rise, over `startup` plus one sample
    interval); 0 unless it rose twice, with samples at most a start-up apart."""
    if len(samples) < 3:
        return 0.0
    new, mid, old = samples
    if new.load <= mid.load or mid.load <= old.load:
        return 0.0
    recent, earlier = new.at - mid.at, mid.at - old.at
    if not (0 < recent <= startup.total_seconds() and 0 < earlier <= startup.total_seconds()):
        return 0.0  # samples further apart than a start-up are no trend to project
    rate = min((new.load - mid.load) / recent, (mid.load - old.load) / earlier)
    return rate * (startup.total_seconds() + recent) if rate > 0 else 0.0


def rising(samples: Sequence[LoadSample]) -> bool:
    """Whether the newest sample is above the lowest of the others taken within `RISING_SPAN`
    of it (a noisy flat load is not rising about a third of the time, so this only delays)."""
    if len(samples) < 2:
        return False
    newest = samples[0]
    return any(newest.at - s.at <= RISING_SPAN and s.load < newest.load for s in samples[1:])


def _highest(window: Sequence[Recommendation]) -> int:
    return max((r.workers for r in window), default=0)


def _last_needed(window: Sequence[Recommendation], workers: int) -> datetime | None:
    """When the window last recommended at least `workers` (None: not within it). A compressed
    window is ordered by falling recommendations, so these come first."""
    last = None
    for recommendation in window:
        if recommendation.workers < workers:
            break
        last = recommendation.at
    return last


def decide(
    policy: Policy,
    current: int,
    observation: Observation,
    history: Sequence[Recommendation],
    now: datetime,
    max_age: float = 90.0,
    damping: Damping = Damping(),
    samples: tuple[LoadSample, ...] = (),
) -> Decision:
    """The number of workers to run now, and why (`samples`: the last decision's)."""
    damping = settle(damping, policy, now)
    span = damping.window or policy.down_window
    since = now - span
    kept = tuple(r for r in history if since < r.at <= now)
    failed = fail_static_reason(observation, max_age)
    if failed is not None:
        return Decision(current, None, failed, kept, damping=damping, samples=samples)
    queued = observation.queued or 0.0
    load = queued + (observation.running or 0.0)
    sample_at = now.timestamp() - (observation.age or 0.0)
    samples = sampled(samples, LoadSample(sample_at, load))
    expected = ahead(samples, policy.startup)
    recommended = recommend(load + expected, policy)
    window = _pushed(kept, Recommendation(now, recommended))
    held_since = None
    pending_at, last_up = None, damping.last_up
    if recommended < current:
        # Stabilized: the highest recommendation of the window, but never above what runs
        # (unless the bounds moved under it).
        highest = _highest(window)
        desired = clamp(min(current, highest), policy)
        newer = max((r.workers for r in window if now - r.at < span / 2), default=recommended)
        if newer < highest < current <= policy.max_workers:
            # The window still holds the way down: wait (half a window at most) to go down
            # once, to where the load has settled.
            held_since = damping.held_since or now
            if now - held_since < span / 2:
                desired = current
        if desired < current and rising(samples):
            desired = current  # not into a rising load
    else:
        desired = recommended
        if current > policy.min_workers and kept:
            # Since when these workers have been unneeded: the window's last recommendation of
            # at least them, or (None) its whole length. An empty window (a new policy, a loop
            # that has not run for a window) says nothing.
            needed = _last_needed(kept, current)
            if needed is None or now - needed >= span * NEAR_FLAP:
                # A near flap: the window kept these workers long unneeded, now needed again.
                damping = _flapped(damping, policy, span, now)
    reason = Reason.STEADY
    # Nothing queued and the load itself fits the workers: only the projection wants more.
    speculative = expected > 0 and queued <= 0 and recommend(load, policy) <= current
    if desired > current and _unconfirmed(
        policy, current, queued, damping, sample_at, now, speculative
    ):
        # The start-up guard: wait for the next sample to want more workers too.
        desired, reason = current, Reason.HELD_FOR_CONFIRMATION
        pending_at = damping.pending_at or datetime.fromtimestamp(sample_at, now.tzinfo)
    elif desired > current:
        # Below the minimum (the bounds moved) the minimum comes at once; the limit is on top.
        limit = max(current, policy.min_workers) + up_step(current, policy)
        if desired > limit:
            # The rest of the step follows in the next round, without the guard.
            desired, reason, last_up = limit, Reason.SCALE_UP_LIMITED, None
        else:
            reason, last_up = Reason.SCALE_UP, now
        if damping.last_down is not None and now - damping.last_down < span:
            # A flap: back up within a window of going down. The window doubles.
            damping = _flapped(damping, policy, span, now)
    elif desired < current:
        reason = Reason.SCALE_DOWN
        damping = replace(damping, last_down=now)
    elif recommended < current:
        reason = Reason.HELD_BY_WINDOW
    if (held_since, pending_at, last_up) != (
        damping.held_since, damping.pending_at, damping.last_up
    ):  # fmt: skip
        damping = replace(damping, held_since=held_since, pending_at=pending_at, last_up=last_up)
    return Decision(desired, recommended, reason, window, load, damping, expected, samples)


def _flapped(damping: Damping, policy: Policy, span: timedelta, now: datetime) -> Damping:
    """The damping after a flap (or a near flap) at `now`: the window doubled, up to the
    policy's maximum (unchanged when damping is off)."""
    grown = min(max(policy.down_window, policy.down_window_max), span * 2)
    if grown > policy.down_window:
        damping = replace(damping, window=grown, last_flap=now)
    return damping


def _unconfirmed(
    policy: Policy, current: int, queued: float, damping: Damping, sample_at: float,
    now: datetime, speculative: bool,
) -> bool:  # fmt: skip
    """Whether a scale-up must wait for the next sample (the start-up guard): it comes within
    `up_confirm` of the last one or is `speculative` (only the rising-load projection asks for
    it), the queue alone would not fill the current workers' slots, the workers are not below
    the minimum, and no earlier sample has asked for it already."""
    recent = damping.last_up is not None and now - damping.last_up < policy.up_confirm
    if not (recent or speculative):
        return False
    if current < policy.min_workers or queued > current * policy.tasks_per_worker:
        return False
    pending = damping.pending_at
    return pending is None or abs(sample_at - pending.timestamp()) < SAME_SAMPLE


def explain(decision: Decision, policy: Policy) -> str:
    """What a decision's reason alone does not say: a scale-down held to go down in one step or
    while the load rises, a scale-up waiting for confirmation, a rising load counted ahead, and
    a scale-down window that flap damping has grown."""
    parts = []
    damping = decision.damping
    span = damping.window or policy.down_window
    held = decision.reason is Reason.HELD_BY_WINDOW
    if held and damping.held_since is not None:
        latest = damping.held_since + span / 2
        parts.append(
            "going down in one step once the load's way down has left the window "
            f"(by {latest:%H:%M:%S} UTC at the latest)"
        )
    elif held and rising(decision.samples) and _highest(decision.history) < decision.desired:
        parts.append("the load is rising again: no scale-down while it rises")
    if decision.reason is Reason.HELD_FOR_CONFIRMATION:
        parts.append(
            "a scale-up soon after the last one, or one only the rising load's projection asks "
            "for, waits for the next sample to want it too"
        )
    if decision.ahead > 0:
        parts.append(
            f"load rising: {decision.ahead:.0f} more tasks expected by the time a new worker "
            "takes tasks were counted"
        )
    if damping.window is not None:
        parts.append(
            f"scale-down window {span.total_seconds():g} s after flapping "
            f"(policy: {policy.down_window.total_seconds():g} s)"
        )
    return "; ".join(parts)
