"""The periodic-job scheduler (APScheduler), owned by the app's lifespan.

Jobs are thin: open a session, ask a service, fan out per deployment with failure isolation (one
deployment's error is logged and counted, the others go on), and record timing. The scheduler's
own heartbeat job is what /readyz reads to know that periodic work is still running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerting.delivery import deliver_due
from app.alerting.dependencies import mailer_of, metric_source_of
from app.alerting.evaluator import evaluator
from app.alerting.models import Notification
from app.alerting.service import alerting
from app.core import leases
from app.core.context import AppContext
from app.core.database import session_scope
from app.core.settings import Settings
from app.integrations.elasticsearch import ElasticsearchClient
from app.logs.dependencies import log_store_of
from app.logs.service import logs
from app.logs.shipping import LogShipper
from app.observability.elasticsearch_target import ElasticsearchTarget
from app.observability.rules import catalogue
from app.provisioning import health
from app.provisioning.service import provisioning
from app.provisioning.targets import Target
from app.runtime.local import LocalRuntime
from app.scaling.service import scaling

logger = logging.getLogger(__name__)

HEARTBEAT = Gauge(
    "sextant_scheduler_heartbeat_timestamp_seconds",
    "Unix time of the periodic-job scheduler's last heartbeat",
)
JOB_DURATION = Histogram(
    "sextant_job_duration_seconds", "Duration of one run of a periodic job", ["job"]
)
EVALUATOR_LEASE = "alert-evaluator"
ALERTS_FIRING = Gauge("sextant_alerts_firing", "Alerts firing across the fleet")
NOTIFICATIONS_QUEUED = Counter(
    "sextant_notifications_queued_total", "Notifications written to the outbox"
)
DELIVERIES = Counter(
    "sextant_notification_deliveries_total", "Outbox delivery outcomes", ["outcome"]
)
JOB_FAILURES = Counter(
    "sextant_job_failures_total", "Per-deployment failures inside periodic jobs", ["job"]
)


class JobScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An APScheduler that lets running jobs finish before the app closes what they use.

    APScheduler's own shutdown cancels a running coroutine job and returns at once. The app would
    then dispose of the database engine while the cancelled job is still rolling back on one of its
    connections, and the job's task would outlive the app; a connection closed twice that way can
    leave a wait that never ends. `stop` pauses the schedule, gives the running jobs `grace`
    seconds, cancels what is left and waits for that too.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._job_tasks: set[asyncio.Task[Any]] = set()

    def add_job(self, func: Callable[..., Awaitable[None]], *args: Any, **kwargs: Any) -> Any:
        tasks = self._job_tasks

        @functools.wraps(func)
        async def tracked(*job_args: Any, **job_kwargs: Any) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await func(*job_args, **job_kwargs)
            finally:
                tasks.discard(task)

        return super().add_job(tracked, *args, **kwargs)

    async def stop(self, grace: float) -> None:
        """Stop scheduling, wait up to `grace` seconds for running jobs, then cancel the rest."""
        self.pause()
        running = {task for task in self._job_tasks if not task.done()}
        if running:
            _, running = await asyncio.wait(running, timeout=grace)
        self.shutdown(wait=False)  # takes effect on the event loop's next turn
        while self.running:
            await asyncio.sleep(0)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=grace)
            logger.warning("cancelled %d periodic job(s) still running at shutdown", len(running))


async def reconcile_due(context: AppContext, targets: Sequence[Target]) -> None:
    """Reconcile (or tear down) every deployment with provisioning work to do."""
    started = time.perf_counter()
    try:
        async with session_scope(context.sessionmaker) as session:
            due = await provisioning.due(session, context.clock, targets)
        for deployment_id in due:
            try:
                async with session_scope(context.sessionmaker) as session:
                    await provisioning.work_on(
                        session, deployment_id, targets, context.clock,
                        context.settings.provisioning,
                    )  # fmt: skip
            except Exception:  # one deployment's failure must not stop the others
                JOB_FAILURES.labels("provisioning").inc()
                logger.exception(
                    "provisioning round failed", extra={"deployment_id": deployment_id}
                )
    finally:
        JOB_DURATION.labels("provisioning").observe(time.perf_counter() - started)


async def check_health(context: AppContext, targets: Sequence[Target]) -> None:
    """Mark deployments healthy or degraded from the runtime's status and the heartbeat."""
    started = time.perf_counter()
    try:
        async with session_scope(context.sessionmaker) as session:
            await health.check(session, targets, metric_source_of(context))
    except Exception:  # the scheduler must keep running whatever one round does
        JOB_FAILURES.labels("health").inc()
        logger.exception("deployment health check failed")
    finally:
        JOB_DURATION.labels("health").observe(time.perf_counter() - started)


async def evaluate_alerts(context: AppContext) -> None:
    """One fleet-wide evaluation round, by whichever replica holds the evaluator lease."""
    source = metric_source_of(context)
    if source is None:
        return
    settings = context.settings
    now = context.clock.now()
    ttl = timedelta(seconds=max(3 * settings.alerts.interval, 30))
    started = time.perf_counter()
    queued = 0
    try:
        async with session_scope(context.sessionmaker) as session:
            if not await leases.acquire(session, EVALUATOR_LEASE, context.instance_id, now, ttl):
                return
        async with session_scope(context.sessionmaker) as session:
            report = await evaluator.evaluate(
                session, source, catalogue(), now, settings.alerts, message_host(settings)
            )
        ALERTS_FIRING.set(report.firing)
        NOTIFICATIONS_QUEUED.inc(report.queued)
        queued = report.queued
    except Exception:  # the scheduler must keep running whatever one round does
        JOB_FAILURES.labels("alerts").inc()
        logger.exception("alert evaluation failed")
    finally:
        JOB_DURATION.labels("alerts").observe(time.perf_counter() - started)
    if queued:
        # What this round queued goes out now, not up to a delivery interval later.
        await deliver_notifications(context)


async def deliver_notifications(context: AppContext) -> None:
    """Send what the outbox holds that is due."""
    mailer = mailer_of(context)
    if mailer is None:
        return
    settings = context.settings
    source = metric_source_of(context)
    rules = catalogue()

    async def compose(
        session: AsyncSession, due: Sequence[Notification]
    ) -> dict[int, EmailMessage]:
        return await alerting.compose_all(session, due, rules, settings, source)

    started = time.perf_counter()
    try:
        report = await deliver_due(
            context.sessionmaker, mailer, compose, context.clock.now(), settings.alerts,
            context.instance_id,
        )  # fmt: skip
        for outcome in ("sent", "retried", "failed", "cancelled"):
            DELIVERIES.labels(outcome).inc(getattr(report, outcome))
    except Exception:  # the scheduler must keep running whatever one round does
        JOB_FAILURES.labels("delivery").inc()
        logger.exception("notification delivery failed")
    finally:
        JOB_DURATION.labels("delivery").observe(time.perf_counter() - started)


SCALING_LEASE = "worker-scaler"


async def scale_workers(context: AppContext, targets: Sequence[Target]) -> None:
    """One fleet-wide worker scaling round, by whichever replica holds the scaler lease."""
    settings = context.settings.scaling
    now = context.clock.now()
    ttl = timedelta(seconds=max(3 * settings.interval, 30))
    started = time.perf_counter()

    async def lease() -> bool:
        async with session_scope(context.sessionmaker) as session:
            return await leases.acquire(session, SCALING_LEASE, context.instance_id, now, ttl)

    try:
        report = await scaling.run_round(
            context.sessionmaker, metric_source_of(context), targets, now, settings, lease
        )
        if report is not None and report.failed:
            JOB_FAILURES.labels("scaling").inc(report.failed)
    except Exception:  # the scheduler must keep running whatever one round does
        JOB_FAILURES.labels("scaling").inc()
        logger.exception("worker scaling round failed")
    finally:
        JOB_DURATION.labels("scaling").observe(time.perf_counter() - started)


LOG_RETENTION_LEASE = "log-retention"
# Backing indices roll over daily at the shortest retention, so an hourly pass deletes each
# expired one within the hour.
LOG_RETENTION_INTERVAL = 3600.0


async def enforce_log_retention(context: AppContext, targets: Sequence[Target]) -> None:
    """Delete each deployment's expired logs, where Elasticsearch's lifecycle does not."""
    target = next((t for t in targets if isinstance(t, ElasticsearchTarget)), None)
    if target is None or not target.configured():
        return
    now = context.clock.now()
    started = time.perf_counter()
    try:
        async with session_scope(context.sessionmaker) as session:
            ttl = timedelta(seconds=0.9 * LOG_RETENTION_INTERVAL)
            holder = context.instance_id
            if not await leases.acquire(session, LOG_RETENTION_LEASE, holder, now, ttl):
                return
            views = await logs.deployments_to_retain(session)
        for view in views:
            try:
                result = await target.enforce_retention(view, now)
            except Exception:  # one deployment's failure must not stop the others
                JOB_FAILURES.labels("log-retention").inc()
                logger.exception("log retention failed", extra={"deployment": view.name})
                continue
            if result.enforced_by_cluster:
                return  # the cluster's lifecycle does it for every deployment
            if result.deleted:
                logger.info(
                    "expired logs deleted",
                    extra={"deployment": view.name, "indices": list(result.deleted)},
                )
    except Exception:  # the scheduler must keep running whatever one round does
        JOB_FAILURES.labels("log-retention").inc()
        logger.exception("log retention failed")
    finally:
        JOB_DURATION.labels("log-retention").observe(time.perf_counter() - started)


# FluentD's flush interval in fluentd/pipeline.conf: a line is searchable within about 5 s.
LOG_SHIP_INTERVAL = 5.0


async def ship_local_logs(context: AppContext, runtime: LocalRuntime, shipper: LogShipper) -> None:
    """Ship the local deployments' new log lines into their data streams (app.logs.shipping).

    A deployment being deleted is left out (its logs are going, or kept as they are), and one
    the runtime is removing waits for it and then has nothing left to ship; teardown removes the
    runtime's part before the data stream, so no late line re-creates the stream. A deployment
    whose lines Elasticsearch refused keeps its position and is sent again next round.
    """
    started = time.perf_counter()
    try:
        async with session_scope(context.sessionmaker) as session:
            views = await logs.deployments_to_retain(session)
        for view in views:
            home = runtime.home(view.name)
            try:
                # Not while the runtime removes the folder; after that there is nothing to ship.
                async with runtime.log_lock(view.name):
                    if (home / "logs").is_dir():
                        await shipper.ship(view.name, view.workspace, home)
            except Exception as exc:  # noqa: BLE001 - one deployment must not stop the others
                JOB_FAILURES.labels("log-shipping").inc()
                logger.warning(
                    "log shipping failed, retried next round",
                    extra={"deployment": view.name, "error": str(exc)},
                )
    except Exception:  # the scheduler must keep running whatever one round does
        JOB_FAILURES.labels("log-shipping").inc()
        logger.exception("log shipping failed")
    finally:
        JOB_DURATION.labels("log-shipping").observe(time.perf_counter() - started)


def message_host(settings: Settings) -> str:
    """The host part of Message-IDs: Sextant's public host name."""
    return urlsplit(settings.server.public_url).hostname or "sextant"


def build_scheduler(context: AppContext, targets: Sequence[Target]) -> JobScheduler:
    """A scheduler with Sextant's jobs; not started."""
    scheduler = JobScheduler(
        timezone="UTC",
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    # APScheduler keeps its own wall-clock time: a first run time from an injected clock that
    # lags it (a test's frozen clock) would make it step through every interval in between.
    soon = datetime.now(UTC) + timedelta(milliseconds=10)

    async def heartbeat() -> None:
        now = context.clock.now()
        context.scheduler_heartbeat = now
        HEARTBEAT.set(now.timestamp())

    scheduler.add_job(
        heartbeat, "interval", seconds=context.settings.scheduler.heartbeat_interval,
        id="scheduler-heartbeat", next_run_time=soon,
    )  # fmt: skip
    scheduler.add_job(
        evaluate_alerts, "interval", args=(context,), seconds=context.settings.alerts.interval,
        id="alerts", next_run_time=soon,
    )  # fmt: skip
    scheduler.add_job(
        deliver_notifications, "interval", args=(context,),
        seconds=context.settings.alerts.delivery_interval, id="delivery", next_run_time=soon,
    )  # fmt: skip
    scheduler.add_job(
        reconcile_due, "interval", args=(context, targets),
        seconds=context.settings.provisioning.interval, id="provisioning", next_run_time=soon,
    )  # fmt: skip
    # First run one interval after the start: there is nothing to judge before provisioning.
    scheduler.add_job(
        check_health, "interval", args=(context, targets),
        seconds=context.settings.provisioning.interval, id="health",
    )  # fmt: skip
    scheduler.add_job(
        scale_workers, "interval", args=(context, targets),
        seconds=context.settings.scaling.interval, id="scaling", next_run_time=soon,
    )  # fmt: skip
    scheduler.add_job(
        enforce_log_retention, "interval", args=(context, targets),
        seconds=LOG_RETENTION_INTERVAL, id="log-retention", next_run_time=soon,
    )  # fmt: skip
    store = log_store_of(context)
    local = next((t for t in targets if isinstance(t, LocalRuntime)), None)
    if isinstance(store, ElasticsearchClient) and local is not None:
        scheduler.add_job(
            ship_local_logs, "interval", args=(context, local, LogShipper(store)),
            seconds=LOG_SHIP_INTERVAL, id="log-shipping", next_run_time=soon,
        )  # fmt: skip
    return scheduler
