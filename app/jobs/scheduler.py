"""The periodic-job scheduler (APScheduler), owned by the app's lifespan.

Jobs are thin: open a session, call a service, record timing. The scheduler's own heartbeat job
is what /readyz reads to know that periodic work is still running.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Gauge

from app.core.context import AppContext

logger = logging.getLogger(__name__)

HEARTBEAT = Gauge(
    "sextant_scheduler_heartbeat_timestamp_seconds",
    "Unix time of the periodic-job scheduler's last heartbeat",
)


def build_scheduler(context: AppContext) -> AsyncIOScheduler:
    """A scheduler with Sextant's jobs; not started."""
    scheduler = AsyncIOScheduler(
        timezone="UTC",
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    interval = context.settings.scheduler.heartbeat_interval

    async def heartbeat() -> None:
        now = context.clock.now()
        context.scheduler_heartbeat = now
        HEARTBEAT.set(now.timestamp())

    scheduler.add_job(
        heartbeat,
        "interval",
        seconds=interval,
        id="scheduler-heartbeat",
        next_run_time=context.clock.now() + timedelta(milliseconds=10),
    )
    return scheduler
