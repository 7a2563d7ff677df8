"""The policy the loop uses: the stored one within the deployment's bounds, and its window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.deployments.models import Deployment
from app.scaling.models import ScalingPolicy
from app.scaling.policy import Damping, LimitKind, LoadSample, Recommendation, _pushed, compress
from app.scaling.service import (
    _carry_samples,
    _damping,
    _damping_json,
    _Plan,
    _window_moved,
    effective_policy,
)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def deployment(low: int = 1, high: int = 10, concurrency: int = 16) -> Deployment:
    return Deployment(min_workers=low, max_workers=high, worker_concurrency=concurrency)


def test_without_a_policy_the_deployment_decides() -> None:
    policy = effective_policy(None, deployment(2, 8, 4))
    assert (policy.min_workers, policy.max_workers, policy.tasks_per_worker) == (2, 8, 4)


def test_a_policy_sets_its_own_numbers() -> None:
    row = ScalingPolicy(min_workers=3, max_workers=5, tasks_per_worker=6, scale_up_limit=50,
                        scale_up_limit_kind="percent", scale_down_window_seconds=60,
                        scale_down_window_max_seconds=900)  # fmt: skip
    policy = effective_policy(row, deployment())
    assert (policy.min_workers, policy.max_workers, policy.tasks_per_worker) == (3, 5, 6)
    assert (policy.up_limit, policy.up_limit_kind) == (50, LimitKind.PERCENT)
    assert policy.down_window == timedelta(seconds=60)
    assert policy.down_window_max == timedelta(seconds=900)


@pytest.mark.parametrize(
    ("stored", "bounds", "expected"),
    [
        ((3, 9), (1, 6), (3, 6)),  # the deployment's maximum went down below the policy's
        ((3, 9), (5, 10), (5, 9)),  # its minimum went up above the policy's
        ((3, 4), (6, 10), (6, 6)),  # the whole policy is below the new bounds
        ((7, 9), (1, 5), (5, 5)),  # ... or above them
    ],
)
def test_the_deployments_bounds_win_when_they_moved(
    stored: tuple[int, int], bounds: tuple[int, int], expected: tuple[int, int]
) -> None:
    row = ScalingPolicy(min_workers=stored[0], max_workers=stored[1], scale_up_limit=4,
                        scale_up_limit_kind="pods", scale_down_window_seconds=300,
                        scale_down_window_max_seconds=1200)  # fmt: skip
    policy = effective_policy(row, deployment(*bounds))
    assert (policy.min_workers, policy.max_workers) == expected


def test_compressing_the_window_keeps_every_future_maximum() -> None:
    window = [Recommendation(T0 + timedelta(seconds=10 * i), w) for i, w in
              enumerate([3, 9, 4, 4, 7, 2, 2])]  # fmt: skip
    kept = compress(window)
    assert [(int((r.at - T0).total_seconds()), r.workers) for r in kept] == [
        (10, 9), (40, 7), (60, 2),
    ]  # fmt: skip
    for now in range(0, 400, 5):
        cut = T0 + timedelta(seconds=now)
        full = [r.workers for r in window if r.at >= cut]
        short = [r.workers for r in kept if r.at >= cut]
        assert max(full, default=None) == max(short, default=None)


def test_the_stored_window_is_rewritten_when_values_move_or_it_is_a_minute_old() -> None:
    now = T0.timestamp()

    def window(*points: tuple[float, int]) -> list[Recommendation]:
        return [Recommendation(datetime.fromtimestamp(at, UTC), w) for at, w in points]

    stored = [[now - 30, 5], [now - 10, 3]]
    assert not _window_moved(stored, window((now - 30, 5), (now, 3)), T0)
    assert _window_moved(stored, window((now - 30, 5), (now, 4)), T0)
    assert _window_moved(stored, window((now, 3)), T0)
    assert _window_moved(stored, window((now - 20, 5), (now, 3)), T0)
    old = [[now - 30, 5], [now - 60, 3]]
    assert _window_moved(old, window((now - 30, 5), (now, 3)), T0)
    assert _window_moved([], window((now, 3)), T0)


def test_the_damping_state_survives_storage_and_bad_rows_count_as_none() -> None:
    state = Damping(window=timedelta(seconds=600), last_down=T0, last_flap=T0 + timedelta(1))
    stored = _damping_json(state)
    assert stored == {"window": 600.0, "last_down": T0.timestamp(),
                      "last_flap": (T0 + timedelta(1)).timestamp()}  # fmt: skip
    assert _damping(stored) == state
    assert _damping_json(Damping()) is None
    guarded = Damping(last_up=T0, pending_at=T0 + timedelta(seconds=15))
    assert _damping(_damping_json(guarded)) == guarded
    for bad in (None, [], {"window": "long"}, {"last_down": "yesterday"}, {"halved_at": 1e300}):
        assert _damping(bad) == Damping()  # type: ignore[arg-type]


def test_pushing_onto_a_window_is_compressing_it() -> None:
    """The loop's fast path equals `compress` on compressed windows and on any other input."""
    rng = random.Random(7)
    for _ in range(2000):
        size = rng.randrange(6)
        points = [Recommendation(T0 + timedelta(seconds=rng.randrange(50)), rng.randrange(5))
                  for _ in range(size)]  # fmt: skip
        newest = Recommendation(T0 + timedelta(seconds=50), rng.randrange(5))
        for window in (compress(points), tuple(points)):
            assert _pushed(window, newest) == compress((*window, newest))


def test_the_last_samples_survive_a_reread_of_the_plans() -> None:
    """The samples are never stored: when the loop reads its plans again (every 60 s at most),
    each policy keeps its own, and a policy new to the loop starts without any."""

    def plan(policy_id: int, samples: tuple[LoadSample, ...] = ()) -> _Plan:
        return _Plan(
            policy_id=policy_id, deployment_id=policy_id, name=f"d{policy_id}", workspace="w",
            policy=effective_policy(None, deployment()), queue=None, current=1, history=(),
            damping=Damping(), last_reason=None, last_desired=None, samples=samples,
        )  # fmt: skip

    seen = (LoadSample(T0.timestamp(), 12.0), LoadSample(T0.timestamp() - 15, 8.0))
    old = [plan(1, seen), plan(2)]
    new = [plan(2), plan(1), plan(3)]
    _carry_samples(old, new)
    assert [p.samples for p in new] == [(), seen, ()]
