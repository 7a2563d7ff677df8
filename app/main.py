"""The app factory: builds the FastAPI app and, in its lifespan, every long-lived resource.

Resources are created on startup (engine, scheduler) and closed in reverse order on shutdown.
Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.errors import install_error_handlers
from app.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.api.router import api_router
from app.core.clock import Clock, SystemClock
from app.core.context import AppContext
from app.core.database import create_engine, create_sessionmaker
from app.core.migrations import DatabaseNotMigrated, current_revision, head_revision, upgrade
from app.core.settings import Settings, get_settings
from app.health.router import router as health_router
from app.jobs.scheduler import build_scheduler
from app.provisioning.registry import build_targets
from app.provisioning.targets import Target

logger = logging.getLogger(__name__)


async def ensure_schema(settings: Settings) -> None:
    """Migrate an embedded SQLite database; refuse a PostgreSQL one that is behind."""
    if settings.is_sqlite and settings.database.auto_migrate:
        path = settings.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade, settings.database.url)
        return
    engine = create_engine(settings.database)
    try:
        current = await current_revision(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"the database is at revision {current or 'none (empty)'} but this Sextant needs "
            f"{head}; run `sextant db upgrade` with the same SEXTANT_DATABASE_URL first"
        )


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    targets: list[Target] | None = None,
) -> FastAPI:
    """A Sextant application for the given settings (from the environment by default)."""
    settings = settings or get_settings()
    clock = clock or SystemClock()
    targets = build_targets(settings) if targets is None else targets

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_schema(settings)
        engine = create_engine(settings.database)
        context = AppContext(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            clock=clock,
            started_at=clock.now(),
        )
        app.state.context = context
        app.state.targets = targets
        scheduler = build_scheduler(context, targets) if settings.scheduler.enabled else None
        if scheduler is not None:
            scheduler.start()
        logger.info(
            "sextant started",
            extra={"database": engine.url.render_as_string(), "runtime": settings.runtime.value},
        )
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            await engine.dispose()
            logger.info("sextant stopped")

    app = FastAPI(
        title="Sextant",
        version=__version__,
        lifespan=lifespan,
        description="Observability and alerting control service for fleets of Apache Airflow "
        "deployments.",
    )
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(api_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
