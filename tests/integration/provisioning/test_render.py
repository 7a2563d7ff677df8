"""`sextant render`: every artifact of every deployment, deterministic, and free of secrets."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from app.core.settings import GrafanaSettings, Settings
from app.provisioning.registry import build_targets
from app.provisioning.render import render_files, write_files
from tests.factories import create_deployment, create_workspace


async def test_render_writes_each_deployments_artifacts_the_same_way_twice(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", "etl-prod")
    await create_deployment(client, admin, "data-eng", "etl-dev", executor="LocalExecutor")
    configured = settings.model_copy(
        update={
            "grafana": GrafanaSettings(
                url="http://grafana:3000", token=SecretStr("glsa_secret_value")
            )
        }
    )
    targets = build_targets(configured)

    async with app.state.context.sessionmaker() as session:
        first = await render_files(session, targets, configured)
        second = await render_files(session, targets, configured)

    assert first == second
    paths = set(first)
    assert "statsd/mappings.yml" in paths
    assert "alertmanager/alertmanager.yml" in paths
    for name in ("etl-prod", "etl-dev"):
        assert f"deployments/{name}/fluentd/fluentd.conf" in paths
        assert any(p.startswith(f"deployments/{name}/grafana/dashboards/data-eng/") for p in paths)
        assert any(p.startswith(f"deployments/{name}/elasticsearch/") for p in paths)
        assert any(p.startswith(f"deployments/{name}/prometheus/") for p in paths)
    assert all("glsa_secret_value" not in text for text in first.values())

    written = write_files(first, tmp_path / "out")
    again = write_files(second, tmp_path / "again")
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in again]
