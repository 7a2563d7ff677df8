"""Stopping the job scheduler: running jobs finish, or are cancelled and awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from app.jobs.scheduler import JobScheduler


async def _running(job: Callable[[asyncio.Event], Awaitable[None]]) -> JobScheduler:
    """A started scheduler whose one job has begun its first run."""
    started = asyncio.Event()
    scheduler = JobScheduler(timezone="UTC")
    scheduler.add_job(job, "interval", args=(started,), seconds=60, next_run_time=datetime.now(UTC))
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=10)
    return scheduler


async def test_a_running_job_finishes_before_stop_returns() -> None:
    finished = asyncio.Event()

    async def job(started: asyncio.Event) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    scheduler = await _running(job)
    await scheduler.stop(grace=5)

    assert finished.is_set()
    assert not scheduler.running


async def test_a_job_over_the_grace_is_cancelled_and_its_cleanup_awaited() -> None:
    cleaned_up = asyncio.Event()

    async def job(started: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.1)  # cleanup that itself awaits, like a rollback
            cleaned_up.set()

    scheduler = await _running(job)
    await scheduler.stop(grace=0.2)

    assert cleaned_up.is_set()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(t.done() for t in others)


async def test_stop_without_running_jobs_returns_at_once() -> None:
    scheduler = JobScheduler(timezone="UTC")
    scheduler.start()
    await scheduler.stop(grace=30)
    assert not scheduler.running
