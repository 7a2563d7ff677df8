"""The scaling gauges and decision counter as /metrics writes them (`_RoundMetrics`): each round's
numbers, a deployment that left the loop gone from the gauges, its counters kept."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.scaling.policy import Damping, Decision, Observation, Policy, Reason
from app.scaling.service import _Outcome, _Plan, _RoundMetrics


def outcome(name: str, desired: int, current: int, reason: Reason, applied: bool) -> _Outcome:
    plan = _Plan(
        policy_id=1, deployment_id=1, name=name, workspace="ws", policy=Policy(1, 8, 16),
        queue=None, current=current, history=(), damping=Damping(), last_reason=None,
        last_desired=None,
    )  # fmt: skip
    decision = Decision(desired, desired, reason)
    return _Outcome(plan, decision, Observation(0.0, 0.0), reason, applied=applied)


def scrape(metrics: _RoundMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def labels(deployment: str, reason: str | None = None) -> tuple[tuple[str, str], ...]:
    pairs = {"deployment": deployment, "workspace": "ws"}
    if reason is not None:
        pairs["reason"] = reason
    return tuple(sorted(pairs.items()))


def test_gauges_follow_the_last_round_and_counters_accumulate() -> None:
    metrics = _RoundMetrics()
    metrics.record(
        [
            outcome("etl", 4, 2, Reason.SCALE_UP, applied=True),
            outcome("bi", 3, 3, Reason.STEADY, applied=False),
        ]
    )
    metrics.record([outcome("etl", 4, 2, Reason.APPLY_FAILED, applied=False)])
    metrics.record([outcome("etl", 4, 4, Reason.STEADY, applied=False)])

    seen = scrape(metrics)
    assert seen[("sextant_scaling_desired_workers", labels("etl"))] == 4
    assert seen[("sextant_scaling_current_workers", labels("etl"))] == 4
    assert seen[("sextant_scaling_max_workers", labels("etl"))] == 8
    assert seen[("sextant_scaling_min_workers", labels("etl"))] == 1
    for reason in ("scale_up", "apply_failed", "steady"):
        assert seen[("sextant_scaling_decisions_total", labels("etl", reason))] == 1
    # "bi" left the loop (its policy disabled): no gauges, but its counter stays.
    assert not any(key[1] == labels("bi") for key in seen)
    assert seen[("sextant_scaling_decisions_total", labels("bi", "steady"))] == 1


def test_current_is_what_was_applied_or_what_runs() -> None:
    metrics = _RoundMetrics()
    metrics.record([outcome("etl", 6, 2, Reason.SCALE_UP, applied=True)])
    assert scrape(metrics)[("sextant_scaling_current_workers", labels("etl"))] == 6
    metrics.record([outcome("etl", 8, 6, Reason.APPLY_FAILED, applied=False)])
    seen = scrape(metrics)
    assert seen[("sextant_scaling_current_workers", labels("etl"))] == 6
    assert seen[("sextant_scaling_desired_workers", labels("etl"))] == 8


def test_a_deployment_back_in_the_loop_keeps_counting() -> None:
    metrics = _RoundMetrics()
    metrics.record([outcome("etl", 2, 2, Reason.STEADY, applied=False)])
    metrics.record([])
    assert scrape(metrics) == {("sextant_scaling_decisions_total", labels("etl", "steady")): 1}
    metrics.record([outcome("etl", 2, 2, Reason.STEADY, applied=False)])
    seen = scrape(metrics)
    assert seen[("sextant_scaling_decisions_total", labels("etl", "steady"))] == 2
    assert seen[("sextant_scaling_desired_workers", labels("etl"))] == 2
