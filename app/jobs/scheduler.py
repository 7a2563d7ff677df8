"""The periodic-job scheduler (APScheduler), owned by the app's lifespan.

Jobs are thin: open a session, ask a service, fan out per deployment with failure isolation (one
deployment's error is logged and counted, the others go on), and record timing. The scheduler's
own heartbeat job is what /readyz reads to know that periodic work is still running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Counter, Gauge, Histogram

from app.core.context import AppContext
from app.core.database import session_scope
from app.provisioning.service import provisioning
from app.provisioning.targets import Target

logger = logging.getLogger(__name__)

HEARTBEAT = Gauge(
    "sextant_scheduler_heartbeat_timestamp_seconds",
    "Unix time of the periodic-job scheduler's last heartbeat",
)
JOB_DURATION = Histogram(
    "sextant_job_duration_seconds", "Duration of one run of a periodic job", ["job"]
)
JOB_FAILURES = Counter(
    "sextant_job_failures_total", "Per-deployment failures inside periodic jobs", ["job"]
)


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


def build_scheduler(context: AppContext, targets: Sequence[Target]) -> AsyncIOScheduler:
    """A scheduler with Sextant's jobs; not started."""
    scheduler = AsyncIOScheduler(
        timezone="UTC",
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    soon = context.clock.now() + timedelta(milliseconds=10)

    async def heartbeat() -> None:
        now = context.clock.now()
        context.scheduler_heartbeat = now
        HEARTBEAT.set(now.timestamp())

    scheduler.add_job(
        heartbeat, "interval", seconds=context.settings.scheduler.heartbeat_interval,
        id="scheduler-heartbeat", next_run_time=soon,
    )  # fmt: skip
    scheduler.add_job(
        reconcile_due, "interval", args=(context, targets),
        seconds=context.settings.provisioning.interval, id="provisioning", next_run_time=soon,
    )  # fmt: skip
    return scheduler
