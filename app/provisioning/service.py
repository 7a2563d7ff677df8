"""The provisioning engine: make every target match each deployment's desired spec.

For each deployment and target it renders the artifacts, compares their hash with what was last
applied, and applies only what changed. Every attempt is recorded as the target's provisioning
run: status, hash, writes, error, attempts. A transient failure is retried with the configured
backoff; a permanent one waits for the longest backoff (or a new spec, or a forced sync). One
target failing never stops the others, and a half-applied deployment is completed on the next
attempt because each target converges on its own.

Deleting a deployment removes its targets in reverse order; the row goes only once all are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock
from app.core.settings import ProvisioningSettings
from app.deployments.models import Deployment
from app.deployments.schemas import DeploymentStatus
from app.integrations.errors import IntegrationError, PermanentError
from app.observability.elasticsearch_target import KEEP_LOGS
from app.observability.grafana_target import LAST_IN_WORKSPACE
from app.provisioning import repository
from app.provisioning.models import ProvisioningRun
from app.provisioning.schemas import ProvisioningRead, ProvisioningRunRead
from app.provisioning.targets import Applied, DeploymentView, Target, content_hash
from app.workspaces import repository as workspace_repository

logger = logging.getLogger(__name__)


def _runtime_answer(targets: Sequence[Target], question: str, deployment: str) -> str | None:
    """What a configured runtime among the targets answers to `question(deployment)`, if one
    has that question and an answer (the local runtime; on Kubernetes service discovery finds
    the exporter and Flower instead)."""
    for target in targets:
        ask = getattr(target, question, None)
        if ask is not None and target.configured():
            found: str | None = ask(deployment)
            if found is not None:
                return found
    return None


class RunStatus:
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    REMOVED = "removed"


class ProvisioningService:
    async def view(
        self,
        session: AsyncSession,
        deployment: Deployment,
        targets: Sequence[Target] = (),
        *,
        tearing_down: bool = False,
    ) -> DeploymentView:
        """What targets see of a deployment."""
        workspace = await workspace_repository.get(session, deployment.workspace_id)
        assert workspace is not None  # a foreign key guarantees it
        extra: dict[str, object] = {
            KEEP_LOGS: deployment.keep_logs,
            "worker_concurrency": deployment.worker_concurrency,
            # The Kubernetes runtime sizes the namespace quota for the most workers allowed.
            "max_workers": deployment.max_workers,
        }
        if tearing_down:
            # Workspace-wide artifacts (Grafana's folder and dashboards) go with the last one.
            remaining = await repository.others_in_workspace(session, deployment)
            extra[LAST_IN_WORKSPACE] = remaining == 0
        metrics_address = flower_address = None
        if not tearing_down:
            # Where the StatsD exporter is scraped first: it makes the local runtime choose the
            # deployment's ports, Flower's among them.
            metrics_address = _runtime_answer(targets, "metrics_address", deployment.name)
            flower_url = _runtime_answer(targets, "flower_url", deployment.name)
            flower_address = urlsplit(flower_url).netloc if flower_url else None
        return DeploymentView(
            name=deployment.name,
            workspace=workspace.name,
            executor=deployment.executor,
            airflow_version=deployment.airflow_version,
            components=deployment.components,
            generation=deployment.generation,
            log_retention_days=deployment.log_retention_days,
            metrics_address=metrics_address,
            flower_address=flower_address,
            extra=extra,
        )

    async def reconcile(
        self,
        session: AsyncSession,
        deployment: Deployment,
        targets: Sequence[Target],
        clock: Clock,
        settings: ProvisioningSettings,
        *,
        force: bool = False,
    ) -> list[ProvisioningRun]:
        """Bring every target in line with the deployment; returns the runs, one per target."""
        view = await self.view(session, deployment, targets)
        runs = {run.target: run for run in await repository.runs_of(session, deployment.id)}
        for target in targets:
            run = runs.get(target.name)
            if run is None:
                run = ProvisioningRun(deployment_id=deployment.id, target=target.name, attempts=0)
                session.add(run)
                runs[target.name] = run
            await self._apply(run, target, view, clock, settings, force=force)
        self._update_status(deployment, [runs[t.name] for t in targets])
        await session.flush()
        return [runs[t.name] for t in targets]

    async def _apply(
        self,
        run: ProvisioningRun,
        target: Target,
        view: DeploymentView,
        clock: Clock,
        settings: ProvisioningSettings,
        *,
        force: bool,
    ) -> None:
        now = clock.now()
        if not force and run.next_attempt_at is not None and run.next_attempt_at > now:
            return
        artifacts = target.render(view)
        digest = content_hash(artifacts)
        if not target.configured():
            run.status, run.content_hash, run.error = RunStatus.SKIPPED, digest, None
            run.applied_generation, run.writes, run.next_attempt_at = view.generation, 0, None
            return
        unchanged = run.status == RunStatus.SUCCEEDED and run.content_hash == digest
        if unchanged and not force:
            # Nothing to write; the generation moved for another target's sake.
            run.applied_generation, run.writes = view.generation, 0
            return
        run.last_attempt_at = now
        try:
            applied: Applied = await target.apply(view, artifacts)
        except IntegrationError as exc:
            run.attempts += 1
            run.status, run.error, run.writes = RunStatus.FAILED, str(exc), 0
            run.next_attempt_at = now + self._backoff(settings, run.attempts, exc)
            logger.warning(
                "provisioning failed",
                extra={
                    "deployment": view.name,
                    "target": target.name,
                    "error": str(exc),
                    "attempts": run.attempts,
                },
            )
            return
        run.status, run.error, run.attempts = RunStatus.SUCCEEDED, None, 0
        run.content_hash, run.applied_generation = digest, view.generation
        run.writes, run.next_attempt_at, run.succeeded_at = applied.writes, None, now

    @staticmethod
    def _backoff(settings: ProvisioningSettings, attempts: int, exc: Exception) -> timedelta:
        steps = settings.backoff
        index = len(steps) - 1 if isinstance(exc, PermanentError) else min(attempts, len(steps)) - 1
        return timedelta(seconds=steps[index])

    @staticmethod
    def _update_status(deployment: Deployment, runs: Sequence[ProvisioningRun]) -> None:
        if deployment.status == DeploymentStatus.DELETING:
            return
        failed = [r for r in runs if r.status == RunStatus.FAILED]
        if failed:
            deployment.status = DeploymentStatus.DEGRADED.value
            deployment.status_reason = "; ".join(f"{r.target}: {r.error}" for r in failed)
        elif deployment.status in (DeploymentStatus.PENDING, DeploymentStatus.DEGRADED):
            # Healthy needs the scheduler's heartbeat in Prometheus, which the runtime reports.
            deployment.status = DeploymentStatus.PROVISIONING.value
            deployment.status_reason = "provisioned; waiting for the scheduler heartbeat"

    async def teardown(
        self,
        session: AsyncSession,
        deployment: Deployment,
        targets: Sequence[Target],
        clock: Clock,
        settings: ProvisioningSettings,
    ) -> bool:
        """Remove the deployment from every target, last-applied first (a target that says
        `removed_last`, the log store, after all others); True when all are gone."""
        view = await self.view(session, deployment, targets, tearing_down=True)
        runs = {run.target: run for run in await repository.runs_of(session, deployment.id)}
        now = clock.now()
        complete = True
        order = sorted(reversed(targets), key=lambda t: bool(getattr(t, "removed_last", False)))
        for target in order:
            run = runs.get(target.name)
            if run is None or run.status in (RunStatus.REMOVED, RunStatus.SKIPPED):
                continue
            if run.next_attempt_at is not None and run.next_attempt_at > now:
                complete = False
                continue
            if not target.configured():
                continue
            run.last_attempt_at = now
            try:
                applied = await target.remove(view)
            except IntegrationError as exc:
                run.attempts += 1
                run.status, run.error = RunStatus.FAILED, f"removing: {exc}"
                run.next_attempt_at = now + self._backoff(settings, run.attempts, exc)
                complete = False
                continue
            run.status, run.error, run.writes = RunStatus.REMOVED, None, applied.writes
            run.next_attempt_at = None
        if complete:
            await session.delete(deployment)
        else:
            deployment.status_reason = "removing: " + "; ".join(
                f"{r.target}: {r.error}" for r in runs.values() if r.status == RunStatus.FAILED
            )
        await session.flush()
        return complete

    async def due(
        self, session: AsyncSession, clock: Clock, targets: Sequence[Target]
    ) -> list[int]:
        """Ids of deployments with provisioning work to do now."""
        rows = await repository.due_deployments(session, clock.now(), [t.name for t in targets])
        return [d.id for d in rows]

    async def work_on(
        self,
        session: AsyncSession,
        deployment_id: int,
        targets: Sequence[Target],
        clock: Clock,
        settings: ProvisioningSettings,
    ) -> None:
        """One round for one deployment: tear it down if it is being deleted, else reconcile."""
        deployment = await session.get(Deployment, deployment_id)
        if deployment is None:
            return
        if deployment.status == DeploymentStatus.DELETING:
            await self.teardown(session, deployment, targets, clock, settings)
        else:
            await self.reconcile(session, deployment, targets, clock, settings)

    async def state(self, session: AsyncSession, deployment: Deployment) -> ProvisioningRead:
        """The API view of a deployment's provisioning."""
        runs = await repository.runs_of(session, deployment.id)
        return ProvisioningRead(
            deployment=deployment.name,
            generation=deployment.generation,
            status=deployment.status,
            status_reason=deployment.status_reason,
            targets=[ProvisioningRunRead.model_validate(r) for r in runs],
        )


provisioning = ProvisioningService()
