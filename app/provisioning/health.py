"""Deployment health: `healthy` when its components are up and its scheduler heartbeat is seen.

Provisioning succeeding only says the targets accepted what was applied. A deployment is
`healthy` when (1) the runtime reports every component with its desired replicas ready (no
runtime configured: nothing to check) and (2) Prometheus has seen its scheduler heartbeat counter
go up within HEARTBEAT_WINDOW: the full path Airflow → StatsD → statsd_exporter → Prometheus
with the deployment's identity label works. Otherwise it stays `provisioning` while it is still
coming up for the first time, and becomes `degraded` with the reason: a crash-looping component
(its exit status and last log line), a component that is not up, or the missing heartbeat.

One fleet-wide Prometheus query per round, never one per deployment. When Prometheus cannot be
asked, nobody's status changes (an outage of the monitoring is not an outage of every
deployment; the alerting pipeline reports it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.deployments.models import Deployment
from app.deployments.schemas import DeploymentStatus
from app.integrations.errors import IntegrationError
from app.integrations.prometheus import Sample
from app.provisioning import repository
from app.provisioning.service import RunStatus, provisioning
from app.provisioning.targets import Target
from app.runtime.base import TARGET_NAME, ComponentState, RuntimeStatus

logger = logging.getLogger(__name__)

HEARTBEAT_WINDOW = "2m"
HEARTBEAT_QUERY = f"max by (deployment) (changes(airflow_scheduler_heartbeat[{HEARTBEAT_WINDOW}]))"
WATCHED = (DeploymentStatus.PROVISIONING, DeploymentStatus.HEALTHY, DeploymentStatus.DEGRADED)


class InstantQuery(Protocol):
    async def instant(self, expr: str) -> Sequence[Sample]: ...


class StatusSource(Protocol):
    async def status(self, deployment: object) -> RuntimeStatus: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    status: DeploymentStatus
    reason: str


def decide(
    current: DeploymentStatus, runtime: RuntimeStatus | None, heartbeat: bool | None
) -> Verdict:
    """The status a deployment deserves; pure.

    `runtime` is None without a runtime to ask; `heartbeat` is None when Prometheus is not
    configured (then nobody can become healthy: the heartbeat is what proves it).
    """
    coming_up = current is DeploymentStatus.PROVISIONING
    if runtime is not None:
        crashing = [c for c in runtime.components if c.state is ComponentState.CRASHLOOP]
        if crashing:
            reasons = [f"{c.component}: crashloop ({c.reason})" for c in crashing]
            return Verdict(DeploymentStatus.DEGRADED, "; ".join(reasons))
        problems = runtime.problems()
        if problems:
            if coming_up:
                return Verdict(DeploymentStatus.PROVISIONING, "starting: " + "; ".join(problems))
            return Verdict(DeploymentStatus.DEGRADED, "; ".join(problems))
    up = "components up; " if runtime is not None else ""
    if heartbeat is None:
        status = DeploymentStatus.PROVISIONING if coming_up else DeploymentStatus.DEGRADED
        return Verdict(status, f"{up}no Prometheus configured to see the scheduler heartbeat")
    if heartbeat:
        return Verdict(DeploymentStatus.HEALTHY, f"{up}scheduler heartbeat seen in Prometheus")
    if coming_up:
        return Verdict(
            DeploymentStatus.PROVISIONING,
            f"{up}waiting for the scheduler heartbeat in Prometheus",
        )
    return Verdict(
        DeploymentStatus.DEGRADED,
        f"{up}no scheduler heartbeat in Prometheus for {HEARTBEAT_WINDOW}",
    )


def runtime_of(targets: Sequence[Target]) -> StatusSource | None:
    """The runtime among the targets, if one that reports status is configured."""
    for target in targets:
        if target.name == TARGET_NAME and hasattr(target, "status") and target.configured():
            return target  # type: ignore[return-value]
    return None


async def heartbeats(source: InstantQuery) -> set[str]:
    """Deployments whose scheduler heartbeat went up within the window."""
    samples = await source.instant(HEARTBEAT_QUERY)
    return {s.labels["deployment"] for s in samples if s.labels.get("deployment") and s.value > 0}


async def check(
    session: AsyncSession, targets: Sequence[Target], source: InstantQuery | None
) -> int:
    """Update the status of every watched deployment; returns how many changed."""
    rows = (
        await session.scalars(
            select(Deployment).where(Deployment.status.in_([s.value for s in WATCHED]))
        )
    ).all()
    if not rows:
        return 0
    seen: set[str] | None = None
    if source is not None:
        try:
            seen = await heartbeats(source)
        except IntegrationError as exc:
            logger.warning("deployment health: Prometheus not asked", extra={"error": str(exc)})
            return 0
    runtime = runtime_of(targets)
    changed = 0
    for deployment in rows:
        runs = await repository.runs_of(session, deployment.id)
        if any(r.status == RunStatus.FAILED for r in runs):
            continue  # the engine's reason (a failed target) stands until it is fixed
        if runtime is not None and not any(r.target == TARGET_NAME for r in runs):
            continue  # not applied to the runtime yet
        observed = None
        if runtime is not None:
            view = await provisioning.view(session, deployment)
            try:
                observed = await runtime.status(view)
            except IntegrationError as exc:
                # The runtime cannot be asked now (an API server away): judge next round.
                logger.warning(
                    "deployment health: runtime status unavailable",
                    extra={"deployment": deployment.name, "error": str(exc)},
                )
                continue
        verdict = decide(
            DeploymentStatus(deployment.status),
            observed,
            None if seen is None else deployment.name in seen,
        )
        if (deployment.status, deployment.status_reason) != (
            verdict.status.value,
            verdict.reason,
        ):
            deployment.status, deployment.status_reason = verdict.status.value, verdict.reason
            changed += 1
    await session.flush()
    return changed
