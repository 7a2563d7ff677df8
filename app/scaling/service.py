"""Worker autoscaling: policies, the fleet-wide decision round, decisions and the simulator.

One round (the scheduler's `scaling` job, by whichever replica holds the lease):

1. read every enabled policy and its deployment (one short transaction; the plans of the last
   round are kept instead while one aggregate query says nothing they come from has changed,
   see `_PlanCache`);
2. ask Prometheus once for the whole fleet's load (`load.FLEET_LOAD_QUERY`);
3. decide per deployment with the pure policy (`policy.decide`); failing static on missing,
   stale, NaN or partial data;
4. apply changes through the runtime, each deployment on its own (one failure does not stop
   the others); scaling down names the idle workers first, and the runtime lets the leaving
   ones finish (Celery warm shutdown; pod-deletion-cost on Kubernetes). Who is idle comes from
   Flower's per-worker gauges in Prometheus, one query for every deployment scaling down in the
   round (`load.worker_load_query`); a deployment Prometheus knows no worker of asks its
   runtime (`worker_load`: Flower's API on the local runtime, nothing on Kubernetes). A worker
   with no fresh load is never named idle: on Kubernetes its pod gets no deletion cost and the
   ReplicaSet chooses as it would without Sextant. A worker idle at its last heartbeat may have
   taken a task since; the warm shutdown (600 s grace on Kubernetes) lets that task finish;
5. write the loop state, the decisions and the new worker count in the deployment's spec (so a
   later re-apply of the spec keeps it) in one transaction.

A decision is stored when it changes something or its reason, desired or current count differs
from the previous one's, so a steady deployment does not write a row every ten seconds; the
counter `sextant_scaling_decisions_total` counts every round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import REGISTRY, Metric
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerting.measure import MetricSource
from app.audit.service import audit
from app.core.clock import utc_now
from app.core.database import session_scope
from app.core.errors import InvalidInput, Unavailable
from app.core.pagination import Page, PageParams
from app.core.security import Principal
from app.core.settings import ScalingSettings
from app.deployments.models import Deployment
from app.deployments.spec import Component, Executor
from app.integrations.errors import IntegrationError
from app.provisioning.service import provisioning
from app.provisioning.targets import DeploymentView, Target
from app.runtime.base import TARGET_NAME, Runtime, ScaleRequest, WorkerLoad
from app.scaling import repository
from app.scaling.load import (
    FLEET_LOAD_QUERY,
    FleetLoad,
    fleet_load,
    load_points,
    load_query,
    worker_load_query,
    worker_loads,
)
from app.scaling.models import ScalingDecision, ScalingPolicy
from app.scaling.policy import (
    Damping,
    Decision,
    LimitKind,
    LoadSample,
    Observation,
    Policy,
    Reason,
    Recommendation,
    decide,
    explain,
)
from app.scaling.schemas import (
    DecisionRead,
    EffectivePolicy,
    PolicyRead,
    PolicyUpdate,
    SimulationOutcome,
    SimulationRequest,
    SimulationResult,
    TimelineEntry,
)
from app.scaling.simulation import replay

logger = logging.getLogger(__name__)

LABELS = ("deployment", "workspace")
# The per-deployment gauges (desired, current, max, min workers) and the decision counter,
# rendered by `_RoundMetrics` when scraped.
GAUGES = (
    ("sextant_scaling_desired_workers", "Workers the autoscaler wants"),
    ("sextant_scaling_current_workers", "Workers the deployment is set to"),
    ("sextant_scaling_max_workers", "The scaling policy's maximum workers"),
    ("sextant_scaling_min_workers", "The scaling policy's minimum workers"),
)
DECISIONS = (
    "sextant_scaling_decisions_total",
    "Autoscaler decisions, by the reason recorded with each",
)
# Prometheus' limit on the points of one range query.
MAX_POINTS = 11_000
PRUNE_EVERY = timedelta(hours=1)
# The loop's plans are read again at least this often even when nothing seems to have changed.
PLANS_REFRESH = timedelta(seconds=60)


def runtime_of(targets: Sequence[Target]) -> Runtime | None:
    """The runtime among the provisioning targets, if Sextant runs deployments."""
    for target in targets:
        if target.name == TARGET_NAME and hasattr(target, "scale"):
            return target  # type: ignore[return-value]
    return None


def current_workers(deployment: Deployment) -> int:
    """The workers the deployment is set to (its spec, which the autoscaler keeps up to date)."""
    workers = (deployment.components or {}).get(Component.WORKERS.value) or {}
    return int(workers.get("replicas", 0))


class PolicyNumbers(Protocol):
    """What `effective_policy` reads of a policy (its row, or the loop's columns of it)."""

    @property
    def min_workers(self) -> int | None: ...
    @property
    def max_workers(self) -> int | None: ...
    @property
    def tasks_per_worker(self) -> int | None: ...
    @property
    def scale_up_limit(self) -> int: ...
    @property
    def scale_up_limit_kind(self) -> str: ...
    @property
    def scale_down_window_seconds(self) -> int: ...
    @property
    def scale_down_window_max_seconds(self) -> int: ...


class DeploymentNumbers(Protocol):
    """What `effective_policy` reads of a deployment."""

    @property
    def min_workers(self) -> int: ...
    @property
    def max_workers(self) -> int: ...
    @property
    def worker_concurrency(self) -> int: ...


def effective_policy(policy: PolicyNumbers | None, deployment: DeploymentNumbers) -> Policy:
    """The numbers the loop uses, bounds within the deployment's own."""
    low, high = deployment.min_workers, deployment.max_workers
    minimum = policy.min_workers if policy and policy.min_workers is not None else low
    maximum = policy.max_workers if policy and policy.max_workers is not None else high
    # The deployment's bounds may have moved since the policy was saved: they win.
    maximum = max(low, min(high, maximum))
    minimum = max(low, min(maximum, minimum))
    per_worker = (
        policy.tasks_per_worker
        if policy and policy.tasks_per_worker is not None
        else deployment.worker_concurrency
    )
    if policy is None:
        return Policy(minimum, maximum, per_worker)
    return Policy(
        minimum,
        maximum,
        per_worker,
        policy.scale_up_limit,
        LimitKind(policy.scale_up_limit_kind),
        timedelta(seconds=policy.scale_down_window_seconds),
        timedelta(seconds=policy.scale_down_window_max_seconds),
    )


def choose_victims(loads: Sequence[WorkerLoad], count: int) -> list[str]:
    """The `count` workers to remove: idle ones first, then the least busy."""
    ranked = sorted(loads, key=lambda w: (w.running_tasks, _descending(w.worker)))
    return [w.worker for w in ranked[: max(0, count)]]


def _descending(name: str) -> tuple[int, str]:
    # Among equally idle workers the newest (highest-numbered) leaves first.
    digits = "".join(c for c in name if c.isdigit())
    return (-int(digits) if digits else 0, name)


# The loop state kept in the database (the last samples live only in the loop's memory: a
# replica taking the lease over starts without them, so no rising-load projection for two
# samples).
_DAMPING_TIMES = ("last_down", "last_flap", "halved_at", "held_since", "last_up", "pending_at")


def _damping(raw: Mapping[str, Any] | None) -> Damping:
    """The stored damping state (anything unreadable counts as none)."""
    if not isinstance(raw, Mapping):
        return Damping()
    try:
        window = raw.get("window")
        times: dict[str, Any] = {
            name: datetime.fromtimestamp(float(raw[name]), UTC)
            for name in _DAMPING_TIMES
            if raw.get(name) is not None
        }
        return Damping(
            window=timedelta(seconds=float(window)) if window is not None else None, **times
        )
    except (TypeError, ValueError, OverflowError):
        return Damping()


def _damping_json(damping: Damping) -> dict[str, Any] | None:
    out: dict[str, Any] = {
        name: value.timestamp()
        for name in _DAMPING_TIMES
        if (value := getattr(damping, name)) is not None
    }
    if damping.window is not None:
        out["window"] = damping.window.total_seconds()
    return out or None


def _carry_samples(old: Sequence[_Plan], new: Sequence[_Plan]) -> None:
    """Keep the last samples (memory only, never stored) across a re-read of the plans."""
    samples = {plan.policy_id: plan.samples for plan in old}
    for plan in new:
        plan.samples = samples.get(plan.policy_id, ())


def _history(raw: Sequence[Any] | None) -> tuple[Recommendation, ...]:
    return tuple(
        Recommendation(datetime.fromtimestamp(float(at), UTC), int(workers))
        for at, workers in (raw or ())
    )


@dataclass(slots=True)
class _Plan:
    policy_id: int
    deployment_id: int
    name: str
    workspace: str
    policy: Policy
    queue: str | None
    current: int
    history: tuple[Recommendation, ...]
    damping: Damping
    last_reason: str | None
    last_desired: int | None
    # The window and damping as stored, to tell whether this round must rewrite them.
    stored_window: Sequence[Any] | None = None
    stored_damping: Mapping[str, Any] | None = None
    # Filled only for deployments whose workers change (a view costs queries).
    view: DeploymentView | None = None
    # The last samples of the load (the loop's memory only; see `policy.ahead`).
    samples: tuple[LoadSample, ...] = ()


@dataclass
class _PlanCache:
    """The plans of the last round, kept up to date by the rounds of this process.

    Valid while the policies, deployments and workspaces the loop reads have not changed (their
    count and newest `updated_at`, one aggregate query), this process has held the lease since it
    read them (no round missed), and for at most `PLANS_REFRESH`.
    """

    fingerprint: tuple[Any, ...]
    read_at: datetime
    plans: list[_Plan]
    # The database they came from (tests run several apps, one after the other, in a process).
    source: object = None


@dataclass(slots=True)
class _Outcome:
    plan: _Plan
    decision: Decision
    observation: Observation
    reason: Reason
    applied: bool = False
    # None: what `explain` says, worked out only for a decision that is applied or stored.
    detail: str | None = None
    # What the round stores for this deployment (`_changes`), once the change is applied.
    changes: _Changes | None = None

    def text(self) -> str:
        if self.detail is None:
            self.detail = explain(self.decision, self.plan.policy)
        return self.detail


@dataclass(frozen=True, slots=True)
class _Changes:
    """What one round stores for one deployment, against what is stored (the plan's copy)."""

    window: list[list[float]] | None  # the window to store, when it moved
    damping: dict[str, Any] | None
    damping_moved: bool
    decision: bool  # a decision row: something changed, or the reason or desired count did


@dataclass(slots=True)
class _Exported:
    """One deployment on /metrics: its gauges' values as of the last round it was in, and its
    decisions counted by reason."""

    labels: tuple[str, str]
    desired: int = 0
    current: int = 0
    max: int = 0
    min: int = 0
    counts: dict[Reason, int] = field(default_factory=dict)


class _RoundMetrics(Collector):
    """The scaling gauges and decision counter, rendered from what the last round recorded when
    /metrics is scraped.

    A round keeps each deployment's numbers and counts its decision; the metric families are
    built only when scraped (looking up and setting four gauge children and a counter child,
    each behind its lock, per deployment and round was most of the round's export). The text
    is what `Gauge`s and a `Counter` labelled the same would write (names, HELP, types, labels,
    the counter's `_created`); the gauges' series come in the round's order.
    """

    def __init__(self) -> None:
        # The deployments of the last round (replaced whole by each round).
        self._shown: dict[tuple[str, str], _Exported] = {}
        # Every deployment ever counted: its counters outlive its gauges, as a Counter's do.
        self._known: dict[tuple[str, str], _Exported] = {}
        # Each (deployment, reason) counter, in the order it was created, and when.
        self._counters: list[tuple[_Exported, Reason, float]] = []

    def record(self, outcomes: Sequence[_Outcome]) -> None:
        """Count a round's decisions and keep its numbers for the gauges (a deployment not in
        the round, its policy disabled or deleted, is no longer shown)."""
        known = self._known
        shown: dict[tuple[str, str], _Exported] = {}
        created: float | None = None
        for outcome in outcomes:
            plan = outcome.plan
            labels = (plan.name, plan.workspace)
            exported = known.get(labels)
            if exported is None:
                exported = known[labels] = _Exported(labels)
            shown[labels] = exported
            desired = outcome.decision.desired
            exported.desired = desired
            exported.current = desired if outcome.applied else plan.current
            exported.max, exported.min = plan.policy.max_workers, plan.policy.min_workers
            counts, reason = exported.counts, outcome.reason
            if reason in counts:
                counts[reason] += 1
            else:
                counts[reason] = 1
                if created is None:
                    created = time.time()
                self._counters.append((exported, reason, created))
        self._shown = shown

    def describe(self) -> list[Metric]:
        gauges, decisions = self._families()
        return [*gauges, decisions]

    def collect(self) -> list[Metric]:
        (desired, current, maximum, minimum), decisions = self._families()
        for exported in self._shown.values():  # never changed once a round has set it
            labels = exported.labels
            desired.add_metric(labels, exported.desired)
            current.add_metric(labels, exported.current)
            maximum.add_metric(labels, exported.max)
            minimum.add_metric(labels, exported.min)
        with_created = prometheus_metrics._use_created
        for exported, reason, created in list(self._counters):
            decisions.add_metric(
                [*exported.labels, reason.value],
                exported.counts[reason],
                created=created if with_created else None,
            )
        return [desired, current, maximum, minimum, decisions]

    @staticmethod
    def _families() -> tuple[list[GaugeMetricFamily], CounterMetricFamily]:
        return (
            [GaugeMetricFamily(name, text, labels=LABELS) for name, text in GAUGES],
            CounterMetricFamily(*DECISIONS, labels=[*LABELS, "reason"]),
        )


ROUND_METRICS = _RoundMetrics()
REGISTRY.register(ROUND_METRICS)


@dataclass
class RoundReport:
    deployments: int = 0
    applied: int = 0
    failed: int = 0
    stored: int = 0
    query_failed: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)


async def _held() -> bool:
    """The lease of a round whose caller holds it already."""
    return True


class ScalingService:
    def __init__(self) -> None:
        # When this process last deleted expired decisions.
        self._pruned_at: datetime | None = None
        self._had_plans = True
        self._cache: _PlanCache | None = None
        self._last_round: datetime | None = None

    # --- policy ---------------------------------------------------------------------------

    async def policy(self, session: AsyncSession, deployment: Deployment) -> PolicyRead:
        """The deployment's policy (defaults, disabled, if it never had one)."""
        row = await repository.policy_of(session, deployment.id)
        return self._read(row, deployment)

    async def put_policy(
        self,
        session: AsyncSession,
        principal: Principal,
        deployment: Deployment,
        data: PolicyUpdate,
    ) -> PolicyRead:
        """Replace the deployment's policy, after checking it against the deployment."""
        self.check(deployment, data)
        row = await repository.policy_of(session, deployment.id)
        before = self._fields(row) if row is not None else None
        if row is None:
            row = ScalingPolicy(deployment_id=deployment.id, recommendations=[])
            session.add(row)
        for name, value in data.model_dump().items():
            setattr(row, name, value)
        row.updated_at = utc_now()
        await session.flush()
        audit.record(
            session,
            principal,
            action="scaling-policy.update",
            resource_type="scaling-policy",
            resource_id=deployment.name,
            workspace_id=deployment.workspace_id,
            deployment_id=deployment.id,
            before=before,
            after=self._fields(row),
        )
        return self._read(row, deployment)

    @staticmethod
    def check(deployment: Deployment, data: PolicyUpdate) -> None:
        """422 naming the field for a policy the deployment cannot have."""
        problems: list[tuple[str, str]] = []
        low, high = deployment.min_workers, deployment.max_workers
        minimum = low if data.min_workers is None else data.min_workers
        maximum = high if data.max_workers is None else data.max_workers
        if data.min_workers is not None and not low <= data.min_workers <= high:
            problems.append(
                ("min_workers", f"must be between the deployment's min_workers ({low}) and "
                                f"max_workers ({high})")
            )  # fmt: skip
        if data.max_workers is not None and not low <= data.max_workers <= high:
            problems.append(
                ("max_workers", f"must be between the deployment's min_workers ({low}) and "
                                f"max_workers ({high})")
            )  # fmt: skip
        if minimum > maximum:
            problems.append(
                ("min_workers", f"min_workers ({minimum}) exceeds max_workers ({maximum})")
            )
        if data.enabled and Executor(deployment.executor) is not Executor.CELERY:
            problems.append(("enabled", f"a {deployment.executor} deployment has no workers"))
        if problems:
            raise InvalidInput(
                "; ".join(f"{f}: {m}" for f, m in problems),
                [{"field": f, "message": m} for f, m in problems],
            )

    def _read(self, row: ScalingPolicy | None, deployment: Deployment) -> PolicyRead:
        stored = self._fields(row) if row is not None else PolicyUpdate().model_dump()
        effective = effective_policy(row, deployment)
        return PolicyRead(
            **stored,
            deployment=deployment.name,
            effective=EffectivePolicy(
                min_workers=effective.min_workers,
                max_workers=effective.max_workers,
                tasks_per_worker=effective.tasks_per_worker,
            ),
            current_workers=current_workers(deployment),
            updated_at=row.updated_at if row is not None else None,
        )

    @staticmethod
    def _fields(row: ScalingPolicy) -> dict[str, Any]:
        return {name: getattr(row, name) for name in PolicyUpdate.model_fields}

    # --- decisions ------------------------------------------------------------------------

    async def decisions(
        self,
        session: AsyncSession,
        deployment: Deployment,
        params: PageParams,
        reason: str | None = None,
    ) -> Page[DecisionRead]:
        """The deployment's decisions, newest first."""
        rows, total = await repository.decisions_page(session, deployment.id, params, reason)
        return Page.of([DecisionRead.model_validate(r) for r in rows], total, params)

    # --- the decision round ----------------------------------------------------------------

    async def run_round(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        source: MetricSource | None,
        targets: Sequence[Target],
        now: datetime,
        settings: ScalingSettings,
        lease: Callable[[], Awaitable[bool]] = _held,
    ) -> RoundReport | None:
        """One fleet-wide decision round (see the module docstring); None when `lease` (taking
        or renewing the scaler lease) says another replica holds it.

        A process that led the last round renews the lease while it reads the plans and the
        load, and drops what it read if the lease was lost meanwhile; any other asks first, so
        replicas that do not lead never query Prometheus."""
        report = RoundReport()
        renew = lease
        if not self._leading(now, settings):
            if not await lease():
                self._cache = self._last_round = None
                return None
            renew = _held

        async def read_plans() -> _PlanCache:
            async with session_scope(sessionmaker) as session:
                fingerprint = await repository.fingerprint(session)
                # The cache is kept again only by a round that gets to its end.
                cache, self._cache = self._cache, None
                if (
                    cache is not None
                    and cache.source is sessionmaker
                    and self._still_valid(cache, fingerprint, now, settings)
                ):
                    for plan in cache.plans:
                        plan.view = None
                    return cache
                plans = await self._plans(session, targets)
                if cache is not None and cache.source is sessionmaker:
                    _carry_samples(cache.plans, plans)
                return _PlanCache(fingerprint, now, plans, sessionmaker)

        async def read_load() -> FleetLoad | None:
            if source is None:
                report.query_failed = "Prometheus is not configured (SEXTANT_PROMETHEUS_URL)"
                return None
            try:
                return fleet_load(await source.instant(FLEET_LOAD_QUERY))
            except IntegrationError as exc:
                report.query_failed = str(exc)
                return None

        if self._had_plans:
            # The policies and the fleet's load are read at the same time: the round takes
            # about as long as the longer of the two, not their sum.
            held, cache, load = await asyncio.gather(renew(), read_plans(), read_load())
        else:
            # No policy last round (most installations): no query unless one appeared.
            held, cache = await asyncio.gather(renew(), read_plans())
            load = await read_load() if cache.plans and held else None
        if not held:
            self._cache = self._last_round = None
            return None
        plans = cache.plans
        self._had_plans = bool(plans)
        report.deployments = len(plans)
        if not plans:
            report.query_failed = None
            ROUND_METRICS.record([])
            self._cache, self._last_round = cache, now
            return report
        runtime = runtime_of(targets)
        outcomes = []
        max_age, unavailable = settings.max_sample_age, Observation(None, None, unavailable=True)
        for plan in plans:
            observation = (
                load.observation(plan.name, plan.queue) if load is not None else unavailable
            )
            decision = decide(
                plan.policy, plan.current, observation, plan.history, now, max_age,
                plan.damping, plan.samples,
            )  # fmt: skip
            outcome = _Outcome(plan, decision, observation, decision.reason)
            if report.query_failed and decision.reason is Reason.METRICS_UNAVAILABLE:
                outcome.detail = report.query_failed
            outcomes.append(outcome)
        changing = [o for o in outcomes if o.decision.desired != o.plan.current]
        if changing and runtime is not None:
            async with session_scope(sessionmaker) as session:
                for outcome in changing:
                    deployment = await session.get(Deployment, outcome.plan.deployment_id)
                    if deployment is not None:
                        outcome.plan.view = await provisioning.view(session, deployment, targets)
        known = await self._worker_loads(source, changing, settings)
        for outcome in changing:
            await self._apply(runtime, outcome, known.get(outcome.plan.name, ()))
        # Only what this round changes is loaded and written: a steady fleet writes nothing.
        for outcome in outcomes:
            outcome.changes = _changes(outcome, now)
        writing = [o for o in outcomes if o.changes is not None]
        prune = self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY
        if writing or prune:
            async with session_scope(sessionmaker) as session:
                ids = [o.plan.policy_id for o in writing]
                rows = {row.id: row for row in await repository.policies_by_id(session, ids)}
                applied = [o.plan.deployment_id for o in writing if o.applied]
                deployments = {
                    d.id: d for d in await repository.deployments_by_id(session, applied)
                }
                for outcome in writing:
                    row = rows.get(outcome.plan.policy_id)
                    if row is not None:  # else deleted with its deployment meanwhile
                        report.stored += self._record(session, row, deployments, outcome, now)
                        outcome.plan.stored_window = row.recommendations
                        outcome.plan.stored_damping = row.damping
                if prune:
                    await repository.forget_decisions_before(
                        session, now - timedelta(days=settings.decision_retention_days)
                    )
                    self._pruned_at = now
        for outcome in outcomes:
            # Reasons are str members: used as they are (`.value` costs per deployment).
            report.reasons[outcome.reason] = report.reasons.get(outcome.reason, 0) + 1
            report.applied += int(outcome.applied)
            report.failed += int(outcome.reason is Reason.APPLY_FAILED)
        ROUND_METRICS.record(outcomes)
        # The plans carry this round's loop state into the next round (what was just written).
        for outcome in outcomes:
            plan, decision = outcome.plan, outcome.decision
            plan.history, plan.damping = decision.history, decision.damping
            plan.samples = decision.samples
            plan.last_reason, plan.last_desired = outcome.reason, decision.desired
            if outcome.applied:
                plan.current = decision.desired
        self._cache, self._last_round = cache, now
        return report

    def _leading(self, now: datetime, settings: ScalingSettings) -> bool:
        """Whether this process ran the last round, recently enough to still hold the lease."""
        last = self._last_round
        return last is not None and timedelta(0) <= now - last <= 2 * timedelta(
            seconds=settings.interval
        )

    def _still_valid(
        self, cache: _PlanCache, fingerprint: tuple[Any, ...], now: datetime,
        settings: ScalingSettings,
    ) -> bool:  # fmt: skip
        """Whether the last round's plans still stand (see `_PlanCache`)."""
        if cache.fingerprint != fingerprint or not now - cache.read_at < PLANS_REFRESH:
            return False
        return self._leading(now, settings)

    async def _plans(self, session: AsyncSession, targets: Sequence[Target]) -> list[_Plan]:
        plans = []
        for row, deployment in await repository.enabled(session):
            if deployment.executor != Executor.CELERY.value:
                continue
            plans.append(
                _Plan(
                    policy_id=row.id,
                    deployment_id=deployment.id,
                    name=deployment.name,
                    workspace=deployment.workspace,
                    policy=effective_policy(row, deployment),
                    queue=row.queue,
                    current=int(deployment.replicas or 0),
                    history=_history(row.recommendations),
                    damping=_damping(row.damping),
                    last_reason=row.last_reason,
                    last_desired=row.last_desired,
                    stored_window=row.recommendations,
                    stored_damping=row.damping,
                )
            )
        return plans

    @staticmethod
    async def _worker_loads(
        source: MetricSource | None, changing: Sequence[_Outcome], settings: ScalingSettings
    ) -> Mapping[str, Sequence[WorkerLoad]]:
        """Running tasks per worker of every deployment scaling down, from Prometheus in one
        query; nothing (the runtime is asked instead) when it cannot be read."""
        names = [
            o.plan.name
            for o in changing
            if o.decision.desired < o.plan.current and o.plan.view is not None
        ]
        if source is None or not names:
            return {}
        try:
            samples = await source.instant(worker_load_query(names, settings.max_sample_age))
        except IntegrationError as exc:
            logger.warning("worker loads not read from Prometheus", extra={"error": str(exc)})
            return {}
        return worker_loads(samples)

    async def _apply(
        self, runtime: Runtime | None, outcome: _Outcome, known: Sequence[WorkerLoad]
    ) -> None:
        plan, desired = outcome.plan, outcome.decision.desired
        if runtime is None or plan.view is None:
            outcome.detail = "not applied: no runtime runs this deployment (SEXTANT_RUNTIME=none)"
            return
        try:
            loads: Sequence[WorkerLoad] = ()
            victims: list[str] = []
            if desired < plan.current:
                loads = known or await runtime.worker_load(plan.view)
                victims = choose_victims(loads, plan.current - desired)
            applied = await runtime.scale(
                plan.view, ScaleRequest(Component.WORKERS.value, desired, victims, loads)
            )
        except Exception as exc:  # noqa: BLE001 - one deployment must not stop the round
            outcome.reason = Reason.APPLY_FAILED
            outcome.detail = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "scaling not applied", extra={"deployment": plan.name, "error": str(exc)}
            )
            return
        outcome.applied = True
        parts = [applied.detail] if applied.detail else []
        if victims:
            busy = {w.worker: w.running_tasks for w in loads}
            parts.append(
                "leaving: " + ", ".join(f"{v} ({busy.get(v, 0)} running)" for v in victims)
            )
        outcome.detail = "; ".join(part for part in (outcome.text(), *parts) if part)

    def _record(
        self,
        session: AsyncSession,
        row: ScalingPolicy,
        deployments: Mapping[int, Deployment],
        outcome: _Outcome,
        now: datetime,
    ) -> int:
        plan, decision, changes = outcome.plan, outcome.decision, outcome.changes
        assert changes is not None
        if changes.window is not None:
            row.recommendations = changes.window
        if changes.damping_moved:
            row.damping = changes.damping
        stored = 0
        if changes.decision:
            repository.add_decision(
                session,
                ScalingDecision(
                    deployment_id=plan.deployment_id,
                    decided_at=now,
                    queued=_finite(outcome.observation.queued),
                    running=_finite(outcome.observation.running),
                    tasks_per_worker=plan.policy.tasks_per_worker,
                    min_workers=plan.policy.min_workers,
                    max_workers=plan.policy.max_workers,
                    current=plan.current,
                    recommended=decision.recommended,
                    desired=decision.desired,
                    applied=outcome.applied,
                    reason=outcome.reason.value,
                    detail=outcome.text()[:2000],
                ),
            )
            stored = 1
        row.last_reason, row.last_desired = outcome.reason.value, decision.desired
        if outcome.applied:
            deployment = deployments.get(plan.deployment_id)
            if deployment is not None:
                components = {k: dict(v) for k, v in (deployment.components or {}).items()}
                components.setdefault(Component.WORKERS.value, {})["replicas"] = decision.desired
                # Not a new generation: the runtime already runs this; a later apply keeps it.
                deployment.components = components
        return stored

    # --- what-if --------------------------------------------------------------------------

    async def simulate(
        self,
        session: AsyncSession,
        deployment: Deployment,
        data: SimulationRequest,
        source: MetricSource | None,
        now: datetime,
        settings: ScalingSettings,
    ) -> SimulationResult:
        """The deployment's real load of the last hours replayed through the proposed policy and
        the current one."""
        if source is None:
            raise Unavailable("Prometheus is not configured (SEXTANT_PROMETHEUS_URL)")
        self.check(deployment, data.policy.model_copy(update={"enabled": False}))
        step = data.step_seconds or settings.interval
        span = data.hours * 3600
        if span / step + 1 > MAX_POINTS:
            raise InvalidInput.for_field(
                "step_seconds",
                f"{data.hours} h at {step} s is more than {MAX_POINTS} points; "
                f"use at least {math.ceil(span / (MAX_POINTS - 1))} s",
            )
        end = math.floor(now.timestamp() / step) * step
        start = end - span
        try:
            series = await source.range(
                load_query(f'deployment="{deployment.name}"'), start, end, step
            )
        except IntegrationError as exc:
            raise Unavailable(f"the load could not be read from Prometheus: {exc}") from exc
        row = await repository.policy_of(session, deployment.id)
        proposed_row = ScalingPolicy(**data.policy.model_dump())
        outcomes = []
        for candidate, queue in (
            (proposed_row, data.policy.queue),
            (row, row.queue if row else None),
        ):
            policy = effective_policy(candidate, deployment)
            points = load_points(series, queue, start, end, step)
            result = replay(
                policy, points, policy.min_workers, step, data.worker_startup_seconds,
                settings.max_sample_age,
            )  # fmt: skip
            outcomes.append(
                SimulationOutcome(
                    effective=EffectivePolicy(
                        min_workers=policy.min_workers,
                        max_workers=policy.max_workers,
                        tasks_per_worker=policy.tasks_per_worker,
                    ),
                    timeline=[
                        TimelineEntry(
                            at=datetime.fromtimestamp(c.at, UTC),
                            load=c.load,
                            workers=c.workers,
                            reason=c.reason.value,
                        )
                        for c in result.timeline
                    ],
                    replica_changes=result.replica_changes,
                    worker_minutes=round(result.worker_seconds / 60, 3),
                    longest_wait_seconds=result.longest_wait,
                    peak_workers=result.peak_workers,
                    fail_static_points=result.fail_static_points,
                )
            )
        return SimulationResult(
            start=datetime.fromtimestamp(start, UTC),
            end=datetime.fromtimestamp(end, UTC),
            step_seconds=step,
            points=int(span / step) + 1,
            proposed=outcomes[0],
            current=outcomes[1],
        )


# The stored window is refreshed at least this often when only its newest time moves: a replica
# that takes the lease over may then scale down at most this much earlier than the window says.
WINDOW_REFRESH = 60.0


def _window_moved(
    stored: Sequence[Any] | None, window: Sequence[Recommendation], now: datetime
) -> bool:
    """Whether the stored window must be rewritten: other values, or a stale newest time."""
    old = stored or ()
    if len(old) != len(window):
        return True
    for index, (at, workers) in enumerate(old):
        if workers != window[index].workers:
            return True
        if index < len(old) - 1 and at != window[index].at.timestamp():
            return True
    return bool(old) and now.timestamp() - float(old[-1][0]) >= WINDOW_REFRESH


def _stored_window(window: Sequence[Recommendation]) -> list[list[float]]:
    return [[r.at.timestamp(), r.workers] for r in window]


def _changes(outcome: _Outcome, now: datetime) -> _Changes | None:
    """What the round must store for this deployment; None for a steady one."""
    plan, decision = outcome.plan, outcome.decision
    record = (
        decision.desired != plan.current
        or outcome.reason != plan.last_reason
        or decision.desired != plan.last_desired
    )
    damping, damping_moved = None, False
    if decision.damping is not plan.damping and decision.damping != plan.damping:
        damping = _damping_json(decision.damping)
        damping_moved = damping != plan.stored_damping
    moved = _window_moved(plan.stored_window, decision.history, now)
    if not (record or damping_moved or moved):
        return None
    return _Changes(
        window=_stored_window(decision.history) if moved else None,
        damping=damping,
        damping_moved=damping_moved,
        decision=record,
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


scaling = ScalingService()
