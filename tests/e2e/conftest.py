"""Fixtures of the end-to-end tests: the real SMTP sink, a migrated PostgreSQL database, and
Sextant with the local runtime watched by a real Prometheus (with an API client as admin)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI

from app.core.clock import SystemClock
from app.core.migrations import upgrade
from app.core.security import Role
from app.core.settings import (
    DatabaseSettings,
    ElasticsearchSettings,
    PrometheusSettings,
    ProvisioningSettings,
    Runtime,
    ScalingSettings,
    SchedulerSettings,
    Settings,
)
from app.main import create_app
from app.observability.prometheus_target import file_sd_scrape_config
from app.tokens.service import CLI_PRINCIPAL, tokens
from tests.harness.components import (
    ComponentDirs,
    ElasticsearchServer,
    PostgresServer,
    PrometheusServer,
)
from tests.harness.plugin import start_component
from tests.harness.smtp import SmtpSink, start_smtp_sink
from tests.integration.runtime._local import (
    local_settings,
    require_local_runtime,
    runtime_of,
    state_dir,
)

__all__ = ["state_dir"]  # a fixture, imported for the e2e tests


@pytest.fixture
def smtp_sink(component_dirs: ComponentDirs) -> Iterator[SmtpSink]:
    """A real aiosmtpd server on 127.0.0.1, keeping every accepted message as a file."""
    sink = start_component(lambda: start_smtp_sink(component_dirs))
    yield sink
    sink.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new database of its own on the real PostgreSQL, migrated to the newest schema."""
    url = postgres_server.create_database(f"sextant_e2e_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    return url


@pytest.fixture
def file_sd_dir(tmp_path: Path) -> Path:
    path = tmp_path / "file_sd"
    path.mkdir()
    return path


@pytest.fixture
def prometheus(
    prometheus_factory: Callable[..., PrometheusServer], file_sd_dir: Path
) -> PrometheusServer:
    """A Prometheus scraping whatever file_sd files Sextant writes, every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [file_sd_scrape_config(file_sd_dir)],
    }
    return prometheus_factory(config=yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def scaling_settings() -> ScalingSettings:
    """The autoscaler's settings; a test module overrides this fixture to change them."""
    return ScalingSettings()


@pytest.fixture
async def sextant(
    postgres_url: str,
    prometheus: PrometheusServer,
    file_sd_dir: Path,
    state_dir: Path,
    scaling_settings: ScalingSettings,
    elasticsearch_server: ElasticsearchServer,
) -> AsyncIterator[FastAPI]:
    """Sextant with the local runtime and its periodic jobs, every second; logs go to the
    session's Elasticsearch."""
    local = local_settings(state_dir)
    require_local_runtime(local)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        runtime=Runtime.LOCAL,
        database=DatabaseSettings(url=postgres_url),
        prometheus=PrometheusSettings(url=prometheus.url, file_sd_dir=file_sd_dir),
        provisioning=ProvisioningSettings(interval=1, backoff=[1, 2, 5]),
        scheduler=SchedulerSettings(heartbeat_interval=0.5),
        scaling=scaling_settings,
        elasticsearch=ElasticsearchSettings(url=elasticsearch_server.url),
        local=local,
    )
    app = create_app(settings, SystemClock())
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        # Whatever the test did, no process outlives it.
        await runtime_of(app).shutdown()


@pytest.fixture
async def client(sextant: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app, as a system administrator."""
    async with sextant.state.context.sessionmaker() as session:
        created = await tokens.create(
            session, CLI_PRINCIPAL, name="e2e", role=Role.SYSTEM_ADMIN,
            workspace_name=None, deployment_name=None,
        )  # fmt: skip
        await session.commit()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sextant),
        base_url="http://sextant.test",
        headers={"Authorization": f"Bearer {created.token}"},
        timeout=30,
    ) as c:
        yield c
