"""The Grafana target against a REAL Grafana, when one is configured.

Set SEXTANT_TEST_GRAFANA_URL and SEXTANT_TEST_GRAFANA_TOKEN (a service-account token with the
Admin role) to run these. They create a folder and dashboards for a workspace named
`sextant-live-<random>` and remove them at the end, and create or update the `sextant-prometheus`
data source (URL from SEXTANT_TEST_GRAFANA_DATASOURCE_URL, default http://127.0.0.1:9090); use a
Grafana meant for testing.

No Grafana server can be obtained on our machines (no package in any reachable registry; see
real-components.md), so without those variables these tests skip, even under
SEXTANT_REQUIRE_REAL=1: the same checks run against the fake Grafana in test_grafana.py.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from pydantic import SecretStr

from app.core.settings import GrafanaSettings
from app.integrations.errors import PermanentError
from app.integrations.grafana import GrafanaClient
from app.observability import dashboards
from app.observability.grafana_target import LAST_IN_WORKSPACE, GrafanaTarget
from app.provisioning.targets import DeploymentView

URL = os.environ.get("SEXTANT_TEST_GRAFANA_URL", "")
TOKEN = os.environ.get("SEXTANT_TEST_GRAFANA_TOKEN", "")
DATASOURCE_URL = os.environ.get("SEXTANT_TEST_GRAFANA_DATASOURCE_URL", "http://127.0.0.1:9090")

pytestmark = pytest.mark.skipif(
    not (URL and TOKEN),
    reason=(
        "no real Grafana: set SEXTANT_TEST_GRAFANA_URL and SEXTANT_TEST_GRAFANA_TOKEN to run "
        "these. Grafana cannot be obtained on this machine (no package in any reachable "
        "registry), so this skip stands even under SEXTANT_REQUIRE_REAL=1; test_grafana.py runs "
        "the same checks against the fake Grafana."
    ),
)


@pytest.fixture
def workspace() -> str:
    return f"sextant-live-{secrets.token_hex(4)}"


@pytest.fixture
async def target(workspace: str) -> AsyncIterator[GrafanaTarget]:
    settings = GrafanaSettings(url=URL, token=SecretStr(TOKEN), timeout=10, concurrency=4)
    target = GrafanaTarget(settings, DATASOURCE_URL)
    yield target
    await target.remove(view(workspace, **{LAST_IN_WORKSPACE: True}))
    await target.aclose()


@pytest.fixture
async def client() -> AsyncIterator[GrafanaClient]:
    client = GrafanaClient(URL, TOKEN, timeout=10, concurrency=4)
    yield client
    await client.aclose()


def view(workspace: str, name: str = "live-deployment", **extra: object) -> DeploymentView:
    return DeploymentView(
        name=name,
        workspace=workspace,
        executor="celery",
        airflow_version="3.3.2",
        components={},
        generation=1,
        extra=extra,
    )


async def apply(target: GrafanaTarget, workspace: str) -> int:
    deployment = view(workspace)
    return (await target.apply(deployment, target.render(deployment))).writes


async def test_real_grafana_answers_health(client: GrafanaClient) -> None:
    health = await client.health()

    assert health.get("database") == "ok"


async def test_real_grafana_first_apply_creates_and_second_apply_writes_nothing(
    target: GrafanaTarget, client: GrafanaClient, workspace: str
) -> None:
    first = await apply(target, workspace)
    second = await apply(target, workspace)

    assert first >= 1 + len(dashboards.SPECS)  # folder and dashboards (and maybe the data source)
    assert second == 0
    for spec in dashboards.SPECS:
        stored = await client.read_dashboard(dashboards.dashboard_uid(workspace, spec.key))
        assert stored is not None
        assert stored["meta"]["folderUid"] == dashboards.folder_uid(workspace)


async def test_real_grafana_412_from_a_concurrent_save_is_re_read_and_re_applied(
    target: GrafanaTarget, client: GrafanaClient, workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply(target, workspace)
    spec = dashboards.SPECS[2]
    uid = dashboards.dashboard_uid(workspace, spec.key)
    folder = dashboards.folder_uid(workspace)
    stored = await client.read_dashboard(uid)
    assert stored is not None
    edited = {**stored["dashboard"], "panels": []}
    await client._api.dashboard.update_dashboard(  # someone edits it in the UI
        {"dashboard": edited, "folderUid": folder, "overwrite": False}
    )

    real_read = GrafanaClient.read_dashboard
    reads = 0

    async def read_then_save_concurrently(
        self: GrafanaClient, dashboard_uid: str
    ) -> Mapping[str, Any] | None:
        nonlocal reads
        found = await real_read(self, dashboard_uid)
        reads += 1
        if reads == 1 and found is not None:  # a second editor saves after our first read
            again = {**found["dashboard"], "description": "edited concurrently"}
            await client._api.dashboard.update_dashboard(
                {"dashboard": again, "folderUid": folder, "overwrite": False}
            )
        return found

    monkeypatch.setattr(GrafanaClient, "read_dashboard", read_then_save_concurrently)
    writes = await target._connected().upsert_dashboard(
        dashboards.instance(spec, workspace), folder
    )
    monkeypatch.undo()

    restored = await client.read_dashboard(uid)
    assert writes == 1
    assert reads == 2
    assert restored is not None
    assert restored["dashboard"]["panels"] == dashboards.instance(spec, workspace)["panels"]


async def test_real_grafana_remove_of_the_last_deployment_removes_dashboards_and_folder(
    target: GrafanaTarget, client: GrafanaClient, workspace: str
) -> None:
    await apply(target, workspace)

    kept = await target.remove(view(workspace))
    removed = await target.remove(view(workspace, **{LAST_IN_WORKSPACE: True}))

    assert kept.writes == 0
    assert removed.writes == len(dashboards.SPECS) + 1
    for spec in dashboards.SPECS:
        assert await client.read_dashboard(dashboards.dashboard_uid(workspace, spec.key)) is None


async def test_real_grafana_refuses_a_wrong_token_as_a_permanent_error() -> None:
    client = GrafanaClient(URL, "glsa_not-a-real-token", timeout=10, concurrency=1)
    try:
        with pytest.raises(PermanentError, match="HTTP 401"):
            await client.ensure_folder("sextant-never-created", "never created")
    finally:
        await client.aclose()
