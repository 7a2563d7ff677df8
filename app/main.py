"""The app factory: builds the FastAPI app and, in its lifespan, every long-lived resource.

Resources are created on startup (engine, scheduler) and closed in reverse order on shutdown.
Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.alerting.dependencies import MAILER, METRIC_SOURCE
from app.alerting.measure import PrometheusSource
from app.api.errors import install_error_handlers
from app.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.api.router import api_router
from app.core.clock import Clock, SystemClock
from app.core.context import AppContext
from app.core.database import create_engine, create_sessionmaker
from app.core.migrations import DatabaseNotMigrated, current_revision, head_revision, upgrade
from app.core.settings import Settings, get_settings
from app.health.router import router as health_router
from app.integrations.elasticsearch import ElasticsearchClient
from app.integrations.prometheus import PrometheusClient
from app.integrations.smtp import Mailer
from app.jobs.scheduler import build_scheduler
from app.logs.dependencies import LOG_STORE
from app.provisioning.registry import build_targets, close_targets, start_targets
from app.provisioning.targets import Target

logger = logging.getLogger(__name__)

# Seconds the periodic jobs running at shutdown get to finish before they are cancelled.
SCHEDULER_STOP_GRACE = 10.0


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


def _start_clients(settings: Settings, context: AppContext) -> list[object]:
    """The long-lived integration clients the configured integrations need."""
    clients: list[object] = []
    if settings.smtp.host:
        mailer = Mailer(settings.smtp, concurrency=settings.alerts.delivery_concurrency)
        context.extras[MAILER] = mailer
        clients.append(mailer)
    if settings.prometheus.url:
        prometheus = PrometheusClient(settings.prometheus.url, settings.prometheus.timeout)
        context.extras[METRIC_SOURCE] = PrometheusSource(prometheus)
        clients.append(prometheus)
    if settings.elasticsearch.url:
        password = settings.elasticsearch.password
        elasticsearch = ElasticsearchClient(
            settings.elasticsearch.url,
            username=settings.elasticsearch.username,
            password=password.get_secret_value() if password is not None else None,
            timeout=settings.elasticsearch.timeout,
        )
        context.extras[LOG_STORE] = elasticsearch
        clients.append(elasticsearch)
    return clients


async def _close_clients(clients: list[object]) -> None:
    for client in reversed(clients):
        try:
            if isinstance(client, Mailer):
                await client.close()
            elif isinstance(client, PrometheusClient):
                client.close()
            elif isinstance(client, ElasticsearchClient):
                await client.aclose()
        except Exception:  # closing must not stop the rest of the shutdown
            logger.exception("closing a client failed")


def _freeze_startup_heap() -> None:
    """Keep what start-up created out of the garbage collector's full passes, once per process.

    A full pass walks every tracked object: with the modules, engine and clients loaded that
    takes about 100 ms, and a large response (a page of 10,000 log lines is some 100,000
    objects, alive long enough to be promoted) sets one off every few requests. Frozen objects
    are still freed by reference counting; only cycles among them are never collected, hence
    once per process, after a collection, rather than at every app start (tests start many).
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


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
        clients = _start_clients(settings, context)
        await start_targets(targets)
        scheduler = build_scheduler(context, targets) if settings.scheduler.enabled else None
        if scheduler is not None:
            scheduler.start()
        _freeze_startup_heap()
        logger.info(
            "sextant started",
            extra={"database": engine.url.render_as_string(), "runtime": settings.runtime.value},
        )
        try:
            yield
        finally:
            if scheduler is not None:
                await scheduler.stop(grace=SCHEDULER_STOP_GRACE)
            await _close_clients(clients)
            await close_targets(targets)
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
