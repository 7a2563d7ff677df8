"""The policy maths as tables of rounds over an injected clock: each row is one decision."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from app.scaling.policy import (
    Damping,
    Decision,
    LimitKind,
    LoadSample,
    Observation,
    Policy,
    Reason,
    Recommendation,
    ahead,
    decide,
    explain,
    recommend,
    rising,
    up_step,
)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICY = Policy(min_workers=1, max_workers=10, tasks_per_worker=4)

# (seconds, queued, running, expected workers, expected reason)
Row = tuple[int, float | None, float | None, int, Reason]


@dataclass
class Loop:
    """The decision loop's memory between rounds, fed back as the service does."""

    policy: Policy = POLICY
    current: int = 1
    history: tuple[Recommendation, ...] = ()
    damping: Damping = field(default_factory=Damping)
    samples: tuple[LoadSample, ...] = ()

    def __call__(self, seconds: float, observation: Observation, max_age: float = 90) -> Decision:
        now = T0 + timedelta(seconds=seconds)
        decision = decide(
            self.policy, self.current, observation, self.history, now, max_age, self.damping,
            self.samples,
        )  # fmt: skip
        self.current, self.history = decision.desired, decision.history
        self.damping, self.samples = decision.damping, decision.samples
        return decision


def run(rows: list[Row], policy: Policy = POLICY, start: int = 1, max_age: float = 90) -> None:
    """Step the policy through the rows, feeding each decision's workers and window back."""
    loop = Loop(policy, start)
    for seconds, queued, running, workers, reason in rows:
        decision = loop(seconds, Observation(queued, running), max_age)
        assert (seconds, decision.desired, decision.reason) == (seconds, workers, reason)


def test_a_burst_scales_up_at_once_within_the_step_limit() -> None:
    run([
        (0, 0, 0, 1, Reason.STEADY),
        # 40 tasks / 4 per worker = 10 workers, but 4 at most per round; the rest of a step
        # cut by the limit follows without waiting for confirmation.
        (10, 38, 2, 5, Reason.SCALE_UP_LIMITED),
        (20, 30, 10, 9, Reason.SCALE_UP_LIMITED),
        (30, 20, 20, 10, Reason.SCALE_UP),
        (40, 0, 40, 10, Reason.STEADY),
    ], policy=Policy(1, 10, 4, up_limit=4))  # fmt: skip


def test_the_default_limit_meets_a_burst_of_ten_workers_in_one_round() -> None:
    run([(0, 0, 0, 1, Reason.STEADY), (10, 38, 2, 10, Reason.SCALE_UP)])


def test_a_scale_up_soon_after_another_waits_for_the_next_sample() -> None:
    """The start-up guard: the backlog left from the last start-up asks for workers that would
    come after it has drained; only a second sample wanting more scales up again."""
    run([
        (0, 10, 2, 3, Reason.SCALE_UP),
        # 60 s later a new batch meets the tasks still running: 20 > 3 x 4 slots. The queue
        # (8) would not fill the 12 slots on its own: wait for the next sample.
        (60, 8, 12, 3, Reason.HELD_FOR_CONFIRMATION),
        (80, 0, 12, 3, Reason.STEADY),  # the next sample: the backlog is gone, no scale-up
        (100, 8, 12, 3, Reason.HELD_FOR_CONFIRMATION),
        # Confirmed by the next sample: up to what this sample asks (18 / 4).
        (110, 6, 12, 5, Reason.SCALE_UP),
        # 120 s after that scale-up the guard is over: the first sample is enough.
        (230, 20, 12, 8, Reason.SCALE_UP),
    ])  # fmt: skip


def test_the_guard_never_delays_a_queue_deeper_than_the_workers_slots() -> None:
    run([
        (0, 10, 2, 3, Reason.SCALE_UP),
        (30, 13, 12, 7, Reason.SCALE_UP),  # 13 queued > 12 slots: a burst, at once
    ])  # fmt: skip


def test_the_guard_waits_for_a_new_sample_not_a_new_round() -> None:
    """Rounds every 10 s, scrapes every 15 s: a round that sees the sample it saw before (same
    scrape time, known from the sample's age) is no confirmation."""
    loop = Loop()
    seen = []
    for second, (queued, running), age in [
        (0, (10, 2), 0), (60, (8, 12), 0), (70, (8, 12), 10), (80, (9, 12), 5),
    ]:  # fmt: skip
        decision = loop(second, Observation(queued, running, age=age))
        seen.append((second, decision.desired, decision.reason))
    assert seen == [
        (0, 3, Reason.SCALE_UP),
        (60, 3, Reason.HELD_FOR_CONFIRMATION),
        (70, 3, Reason.HELD_FOR_CONFIRMATION),  # scraped at 60 like the last one
        (80, 6, Reason.SCALE_UP),  # scraped at 75: a new sample wants more too
    ]


def test_a_rising_load_is_counted_ahead_by_one_start_up() -> None:
    """Rising over each of the last two samples (by 4 tasks per 10 s), the load is counted
    4/10 x (30 s start-up + 10 s) = 16 tasks ahead: 6 workers at once instead of a staircase."""
    loop = Loop()
    decisions = [loop(second, Observation(0, load)) for second, load in [(0, 0), (10, 4), (20, 8)]]
    assert [(d.desired, d.ahead) for d in decisions] == [(1, 0), (1, 0), (6, 16)]
    assert "16 more tasks expected" in explain(decisions[-1], POLICY)


@pytest.mark.parametrize(
    ("running_then", "workers", "reason"),
    [
        pytest.param(12, 4, Reason.SCALE_UP, id="still-rising"),
        pytest.param(10, 3, Reason.STEADY, id="noise"),
    ],
)
def test_a_scale_up_only_the_projection_asks_for_waits_for_the_next_sample(
    running_then: int, workers: int, reason: Reason
) -> None:
    """Long after the last scale-up, nothing queued and 11 running fit 3 workers: only the
    projection (12 tasks ahead) wants 6. One noisy rise is no ramp: the next sample must want
    more too."""
    run([
        (0, 12, 0, 3, Reason.SCALE_UP),
        (200, 0, 4, 3, Reason.HELD_BY_WINDOW),
        (210, 0, 8, 3, Reason.HELD_BY_WINDOW),
        (220, 0, 11, 3, Reason.HELD_FOR_CONFIRMATION),
        (230, 0, running_then, workers, reason),
    ])  # fmt: skip


def test_the_slower_of_the_two_rises_counts_and_old_samples_do_not() -> None:
    at = T0.timestamp()
    samples = (LoadSample(at + 20, 20), LoadSample(at + 10, 8), LoadSample(at, 6))
    assert ahead(samples, timedelta(seconds=30)) == 0.2 * 40  # 2 per 10 s, not 12
    sparse = (samples[0], samples[1], LoadSample(at - 60, 0))
    assert ahead(sparse, timedelta(seconds=30)) == 0  # 70 s apart: more than a start-up


def test_a_load_that_jumps_once_is_not_projected() -> None:
    """A step (a batch arriving at once) is no trend: nothing is counted ahead."""
    loop = Loop()
    decisions = [loop(second, Observation(0, load)) for second, load in [(0, 0), (10, 0), (20, 24)]]
    assert (decisions[-1].desired, decisions[-1].ahead) == (6, 0)


def test_a_burst_within_the_limit_is_met_in_one_round() -> None:
    run([(0, 0, 0, 1, Reason.STEADY), (10, 16, 0, 4, Reason.SCALE_UP)])


def test_after_a_burst_workers_stay_for_the_window_then_go_to_the_minimum() -> None:
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (10, 0, 12, 10, Reason.HELD_BY_WINDOW),
        (200, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (299, 0, 0, 10, Reason.HELD_BY_WINDOW),
        # The 40-task recommendation of t=0 leaves the 300 s window; t=10 said 3.
        # Then the window still holds the way down (t=10 said 3, the newer half says 1):
        # the workers stay until it has left, and go down once.
        (300, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (310, 0, 0, 1, Reason.SCALE_DOWN),
    ], policy=Policy(1, 10, 4, up_limit=100), start=1)  # fmt: skip


def test_a_load_falling_for_longer_than_half_a_window_is_followed_down() -> None:
    """The one-step scale-down waits for the way down at most half a window."""
    rows: list[Row] = [(0, 40, 0, 10, Reason.SCALE_UP)]
    # From t=10 the load falls by one worker's worth every 60 s: 9, 8, 7, ... workers.
    rows += [(10 + 60 * k, 4 * (9 - k), 0, 10, Reason.HELD_BY_WINDOW) for k in range(5)]
    # t=300: the t=0 recommendation has left; the window (t=10: 9) is falling: held...
    rows += [(300, 16, 0, 10, Reason.HELD_BY_WINDOW), (440, 16, 0, 10, Reason.HELD_BY_WINDOW)]
    # ...for half a window (150 s) at most, then down to the window's highest (t=190: 6).
    rows += [(450, 16, 0, 6, Reason.SCALE_DOWN)]
    run(rows, policy=Policy(1, 10, 4, up_limit=100))


def test_a_flap_doubles_the_window_and_calm_halves_it_again() -> None:
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1200))
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (10, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (300, 0, 0, 1, Reason.SCALE_DOWN),
        # Back up 100 s after going down (within the 300 s window): a flap, window 600 s.
        (400, 40, 0, 10, Reason.SCALE_UP),
        (410, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (999, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (1000, 0, 0, 1, Reason.SCALE_DOWN),
        # 600 s down without coming back: calm, the window is 300 s again. This burst,
        # 1000 s after going down, is no flap; its workers go after 300 s.
        (2000, 40, 0, 10, Reason.SCALE_UP),
        (2299, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (2300, 0, 0, 1, Reason.SCALE_DOWN),
    ], policy=policy)  # fmt: skip


def test_repeated_flaps_grow_the_window_up_to_its_maximum_only() -> None:
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1000))
    damping = Damping()
    current, history = 1, ()
    down_after = []
    at = 0
    for _ in range(4):
        # A burst, then nothing until the workers go; then the next burst 60 s later.
        start = at
        now = T0 + timedelta(seconds=at)
        decision = decide(policy, current, Observation(40, 0), history, now, 90, damping)
        current, history, damping = decision.desired, decision.history, decision.damping
        while current > 1:
            at += 10
            now = T0 + timedelta(seconds=at)
            decision = decide(policy, current, Observation(0, 0), history, now, 90, damping)
            current, history, damping = decision.desired, decision.history, decision.damping
        down_after.append(at - start)
        at += 60
    # 300 s, then 600 (one flap), then the maximum of 1000 (two and three flaps).
    assert down_after == [300, 600, 1000, 1000]


def test_capacity_kept_unneeded_for_long_then_needed_again_grows_the_window() -> None:
    """A near flap: the window kept the burst's workers unneeded for 140 s (more than 40% of
    its 300 s) before the next burst needed them. The window doubles as for a flap, so the
    workers stay 600 s after that burst instead of 300 s."""
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1200))
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (10, 0, 8, 10, Reason.HELD_BY_WINDOW),
        (130, 0, 8, 10, Reason.HELD_BY_WINDOW),
        (140, 40, 0, 10, Reason.STEADY),
        (150, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (739, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (740, 0, 0, 1, Reason.SCALE_DOWN),
    ], policy=policy)  # fmt: skip


def test_bursts_closer_than_the_near_flap_share_keep_the_window() -> None:
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1200))
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (10, 0, 8, 10, Reason.HELD_BY_WINDOW),
        # 110 s unneeded is under 40% of the window: no near flap, the window stays 300 s.
        (110, 40, 0, 10, Reason.STEADY),
        (120, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (409, 0, 0, 10, Reason.HELD_BY_WINDOW),
        (410, 0, 0, 1, Reason.SCALE_DOWN),
    ], policy=policy)  # fmt: skip


def test_at_the_minimum_the_workers_are_always_needed() -> None:
    """A load that comes back to a deployment at its minimum is no near flap."""
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1200))
    loop = Loop(policy, 1)
    loop(0, Observation(0, 0))
    loop(250, Observation(0, 2))
    assert loop.damping.window is None


def test_a_new_policy_or_a_stale_window_is_no_near_flap() -> None:
    """Three workers and a load that needs them: no recommendation in the window says nothing
    about how long they were unneeded (a policy just enabled, or a loop that did not run)."""
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1200))
    fresh = Loop(policy, 3)
    fresh(0, Observation(0, 12))
    stale = Loop(policy, 3, history=(Recommendation(T0, 3),))
    stale(900, Observation(0, 12))
    assert (fresh.damping.window, stale.damping.window) == (None, None)


def test_no_scale_down_into_a_rising_load() -> None:
    """The burst's recommendation leaves the window at t=300 just as the load starts rising:
    the workers stay until a sample is no longer above the recent ones, then go down once."""
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (10, 0, 4, 10, Reason.HELD_BY_WINDOW),
        (280, 0, 4, 10, Reason.HELD_BY_WINDOW),
        (290, 0, 4, 10, Reason.HELD_BY_WINDOW),
        (300, 0, 8, 10, Reason.HELD_BY_WINDOW),
        (310, 0, 12, 10, Reason.HELD_BY_WINDOW),
        # 12 is still above t=300's 8.
        (320, 0, 12, 10, Reason.HELD_BY_WINDOW),
        # Down once, to the window's highest: t=310 counted the rise ahead (12 + 16 tasks).
        (330, 0, 12, 7, Reason.SCALE_DOWN),
    ], policy=Policy(1, 10, 4, up_limit=100))  # fmt: skip


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        pytest.param((LoadSample(100, 5),), False, id="one-sample"),
        pytest.param((LoadSample(100, 5), LoadSample(85, 5), LoadSample(70, 5)), False, id="flat"),
        pytest.param((LoadSample(100, 5), LoadSample(85, 6), LoadSample(70, 4)), True, id="up"),
        pytest.param((LoadSample(100, 4), LoadSample(85, 5), LoadSample(70, 6)), False, id="down"),
        pytest.param((LoadSample(100, 5), LoadSample(50, 1)), True, id="within-span"),
        pytest.param((LoadSample(100, 5), LoadSample(30, 1)), False, id="too-old"),
    ],
)
def test_rising_compares_the_newest_sample_with_recent_ones(
    samples: tuple[LoadSample, ...], expected: bool
) -> None:
    assert rising(samples) is expected


def test_no_damping_when_the_maximum_is_not_above_the_window() -> None:
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (300, 0, 0, 1, Reason.SCALE_DOWN),
        (400, 40, 0, 10, Reason.SCALE_UP),
        (700, 0, 0, 1, Reason.SCALE_DOWN),
    ], policy=Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(0)))  # fmt: skip


def test_a_sawtooth_shorter_than_the_window_scales_up_once_and_down_once() -> None:
    """24 tasks one minute, 2 the next, for 20 minutes, then nothing: one step up, one down."""
    policy = Policy(1, 10, 4, up_limit=10)
    current, history = 1, ()
    changes = []
    for second in range(0, 1800, 10):
        load = (24.0 if (second // 60) % 2 else 2.0) if second < 1200 else 0.0
        now = T0 + timedelta(seconds=second)
        decision = decide(policy, current, Observation(load, 0), history, now)  # type: ignore[arg-type]
        if decision.desired != current:
            changes.append((second, decision.desired))
        current, history = decision.desired, decision.history  # type: ignore[assignment]
    # The last 24 was seen at t=1190; it leaves the 300 s window at t=1490.
    assert changes == [(60, 6), (1490, 1)]


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        pytest.param(Observation(None, None), Reason.NO_DATA, id="missing"),
        pytest.param(Observation(3, None), Reason.PARTIAL_DATA, id="partial"),
        pytest.param(Observation(None, 3), Reason.PARTIAL_DATA, id="partial-other"),
        pytest.param(Observation(math.nan, 3), Reason.INVALID_DATA, id="nan"),
        pytest.param(Observation(math.inf, 0), Reason.INVALID_DATA, id="inf"),
        pytest.param(Observation(-1, 0), Reason.INVALID_DATA, id="negative"),
        pytest.param(Observation(0, 0, age=91), Reason.STALE_DATA, id="stale"),
        pytest.param(Observation(0, 0, age=math.nan), Reason.STALE_DATA, id="stale-nan"),
        pytest.param(Observation(0, 0, unavailable=True), Reason.METRICS_UNAVAILABLE, id="down"),
    ],
)
def test_bad_data_changes_nothing_in_either_direction(
    observation: Observation, reason: Reason
) -> None:
    # 8 workers, and a window whose recommendations all expired: good data saying 0 would
    # scale down to 1 now; bad data must not.
    old = (Recommendation(T0 - timedelta(seconds=400), 8),)
    decision = decide(POLICY, 8, observation, old, T0)
    assert (decision.desired, decision.reason, decision.recommended) == (8, reason, None)
    below = decide(Policy(3, 10, 4), 1, observation, (), T0)
    assert below.desired == 1


def test_missing_data_does_not_feed_the_window() -> None:
    run([
        (0, 40, 0, 10, Reason.SCALE_UP),
        (100, None, None, 10, Reason.NO_DATA),
        (200, None, None, 10, Reason.NO_DATA),
        (300, 0, 0, 1, Reason.SCALE_DOWN),
    ], policy=Policy(1, 10, 4, up_limit=100))  # fmt: skip


def test_fresh_data_just_inside_the_age_limit_is_used() -> None:
    decision = decide(POLICY, 1, Observation(8, 0, age=90), (), T0)
    assert (decision.desired, decision.reason) == (2, Reason.SCALE_UP)


def test_lowering_the_maximum_scales_down_at_once() -> None:
    history = (Recommendation(T0 - timedelta(seconds=10), 10),)
    decision = decide(Policy(1, 6, 4), 10, Observation(40, 0), history, T0)
    assert (decision.desired, decision.reason) == (6, Reason.SCALE_DOWN)


def test_raising_the_minimum_scales_up_to_it_beyond_the_step_limit() -> None:
    decision = decide(Policy(8, 10, 4, up_limit=1), 1, Observation(0, 0), (), T0)
    assert (decision.desired, decision.reason) == (8, Reason.SCALE_UP)
    more = decide(Policy(8, 20, 4, up_limit=1), 1, Observation(80, 0), (), T0)
    assert (more.desired, more.reason) == (9, Reason.SCALE_UP_LIMITED)


def test_a_zero_minimum_scales_to_zero_and_back() -> None:
    run([
        (0, 0, 0, 0, Reason.SCALE_DOWN),
        (10, 1, 0, 1, Reason.SCALE_UP),
    ], policy=Policy(0, 10, 4, down_window=timedelta(0)), start=1)  # fmt: skip


@pytest.mark.parametrize(
    ("load", "per_worker", "expected"),
    [
        (0, 4, 1),
        (1, 4, 1),
        (4, 4, 1),
        (5, 4, 2),
        (40, 16, 3),
        (1000, 4, 10),
        (32.000000000001, 16, 2),
    ],
)
def test_recommendation_is_the_ceiling_within_bounds(
    load: float, per_worker: int, expected: int
) -> None:
    assert recommend(load, Policy(1, 10, per_worker)) == expected


@pytest.mark.parametrize(
    ("kind", "limit", "current", "step"),
    [
        (LimitKind.PODS, 4, 1, 4),
        (LimitKind.PODS, 4, 50, 4),
        (LimitKind.PERCENT, 100, 0, 1),
        (LimitKind.PERCENT, 100, 3, 3),
        (LimitKind.PERCENT, 50, 3, 2),
        (LimitKind.PERCENT, 10, 1, 1),
    ],
)
def test_up_step_in_pods_or_percent(kind: LimitKind, limit: int, current: int, step: int) -> None:
    assert up_step(current, Policy(0, 100, 4, up_limit=limit, up_limit_kind=kind)) == step


def test_percent_limit_doubles_per_round() -> None:
    run([
        (0, 40, 0, 2, Reason.SCALE_UP_LIMITED),
        (10, 40, 0, 4, Reason.SCALE_UP_LIMITED),
        (20, 40, 0, 8, Reason.SCALE_UP_LIMITED),
        (30, 40, 0, 10, Reason.SCALE_UP),
    ], policy=Policy(1, 10, 4, up_limit=100, up_limit_kind=LimitKind.PERCENT))  # fmt: skip


def test_the_decision_says_when_it_holds_for_one_step_and_when_the_window_grew() -> None:
    policy = Policy(1, 10, 4, up_limit=100, down_window_max=timedelta(seconds=1200))
    history: tuple[Recommendation, ...] = ()
    damping = Damping()
    current = 1
    said = {}
    for seconds, load in [(0, 40), (10, 12), (300, 0), (310, 0), (400, 40), (410, 0)]:
        decision = decide(
            policy, current, Observation(load, 0), history, T0 + timedelta(seconds=seconds), 90,
            damping,
        )  # fmt: skip
        said[seconds] = (decision.reason, explain(decision, policy))
        current, history, damping = decision.desired, decision.history, decision.damping
    assert said[0] == (Reason.SCALE_UP, "")
    # t=300: the window still holds t=10's 3 workers; down once, by t=450 at the latest.
    assert said[300] == (
        Reason.HELD_BY_WINDOW,
        "going down in one step once the load's way down has left the window "
        "(by 12:07:30 UTC at the latest)",
    )
    assert said[310][0] is Reason.SCALE_DOWN
    # Back up 90 s after going down: a flap, and the decisions say the window grew.
    assert said[400] == (
        Reason.SCALE_UP, "scale-down window 600 s after flapping (policy: 300 s)"
    )  # fmt: skip
    assert said[410][1] == "scale-down window 600 s after flapping (policy: 300 s)"


def test_the_decision_says_when_it_holds_for_a_rising_load() -> None:
    loop = Loop(Policy(1, 10, 4, up_limit=100), 1)
    for seconds, running in [(0, 40), (10, 4), (290, 4), (300, 8)]:
        decision = loop(seconds, Observation(0, running))
    assert (decision.reason, explain(decision, loop.policy)) == (
        Reason.HELD_BY_WINDOW,
        "the load is rising again: no scale-down while it rises",
    )
