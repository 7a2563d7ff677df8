"""What targets see of where a deployment is scraped: the local runtime's exporter and Flower
addresses reach the Prometheus target's file_sd file (real databases, real local runtime state
folder; no process is started)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.core.clock import FrozenClock
from app.core.database import session_scope
from app.core.settings import LocalSettings, PrometheusSettings, Settings
from app.deployments import repository
from app.main import create_app
from app.observability.prometheus_target import PrometheusTarget, render_file_sd
from app.provisioning.service import provisioning
from app.runtime.local import LocalRuntime
from tests.conftest import _empty_tables
from tests.factories import create_deployment, create_workspace


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    await _empty_tables(settings.database.url)
    quiet = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
    )
    application = create_app(quiet, clock, targets=[])
    async with application.router.lifespan_context(application):
        yield application


async def test_the_local_runtime_gives_the_exporter_and_flower_addresses_to_file_sd(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path
) -> None:
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", "etl-prod")
    runtime = LocalRuntime(LocalSettings(state_dir=tmp_path / "local"))
    target = PrometheusTarget(PrometheusSettings(file_sd_dir=tmp_path / "file_sd"))

    async with session_scope(app.state.context.sessionmaker) as session:
        deployment = await repository.get_by_name(session, "etl-prod")
        assert deployment is not None
        view = await provisioning.view(session, deployment, [runtime, target])
        leaving = await provisioning.view(session, deployment, [runtime], tearing_down=True)

    ports = runtime.ports("etl-prod")
    assert ports is not None
    assert view.metrics_address == f"127.0.0.1:{ports['statsd_web']}"
    assert view.flower_address == f"127.0.0.1:{ports['flower']}"
    exporter, flower = json.loads(render_file_sd(view))
    assert (exporter["targets"], flower["targets"]) == (
        [view.metrics_address],
        [view.flower_address],
    )
    assert exporter["labels"] == {"workspace": "data-eng", "deployment": "etl-prod"}
    assert flower["labels"] == {**exporter["labels"], "component": "flower"}
    # A deployment being deleted is scraped no more.
    assert (leaving.metrics_address, leaving.flower_address) == (None, None)
