"""Stopping the job scheduler: running jobs finish or are cancelled and awaited, none outlives it."""

from __future__ import annotations

import asyncio

from app.jobs.scheduler import JobScheduler


async def _started(scheduler: JobScheduler, started: asyncio.Event) -> None:
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=10)


async def test_a_running_job_finishes_before_stop_returns() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    scheduler = JobScheduler(timezone="UTC")
    scheduler.add_job(job, "interval", seconds=60, next_run_time=_now())
    await _started(scheduler, started)

    await scheduler.stop(grace=5)

    assert finished.is_set()
    assert not scheduler.running


async def test_a_job_over_the_grace_is_cancelled_and_its_cleanup_awaited() -> None:
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.1)  # cleanup that itself awaits, like a rollback
            cleaned_up.set()

    scheduler = JobScheduler(timezone="UTC")
    scheduler.add_job(job, "interval", seconds=60, next_run_time=_now())
    await _started(scheduler, started)

    await scheduler.stop(grace=0.2)

    assert cleaned_up.is_set()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(t.done() for t in others)


async def test_stop_without_running_jobs_returns_at_once() -> None:
    scheduler = JobScheduler(timezone="UTC")
    scheduler.start()
    await scheduler.stop(grace=30)
    assert not scheduler.running


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
