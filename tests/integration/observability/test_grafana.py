"""The Grafana target and integration against a FAKE Grafana (tests/fakes/grafana.py).

No Grafana server can be obtained here, so these run against a fake that follows Grafana's
documented HTTP API over real HTTP on 127.0.0.1; test_grafana_live.py runs the core of them
against a real Grafana when one is configured.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.core.clock import FrozenClock
from app.core.settings import GrafanaSettings, Settings
from app.integrations.errors import PermanentError, TransientError
from app.integrations.grafana import MAX_CONFLICT_RETRIES, GrafanaClient
from app.main import create_app
from app.observability import dashboards
from app.observability.grafana_target import LAST_IN_WORKSPACE, GrafanaTarget
from app.provisioning.targets import DeploymentView
from tests.factories import create_deployment, create_workspace
from tests.fakes.grafana import FakeGrafana

PROMETHEUS_URL = "http://127.0.0.1:9090"
WORKSPACE = "data-eng"
DASHBOARD_COUNT = len(dashboards.SPECS)


@pytest.fixture
def fake_grafana() -> Iterator[FakeGrafana]:
    """A fake Grafana (not a real one) serving on 127.0.0.1 for one test."""
    with FakeGrafana().running() as fake:
        yield fake


def grafana_settings(fake: FakeGrafana, **changes: object) -> GrafanaSettings:
    values: dict[str, object] = {
        "url": fake.url,
        "token": SecretStr(fake.token),
        "timeout": 2.0,
        "concurrency": 4,
    }
    return GrafanaSettings(**{**values, **changes})  # type: ignore[arg-type]


@pytest.fixture
async def target(fake_grafana: FakeGrafana) -> AsyncIterator[GrafanaTarget]:
    target = GrafanaTarget(grafana_settings(fake_grafana), PROMETHEUS_URL)
    yield target
    await target.aclose()


def view(name: str = "etl-prod", workspace: str = WORKSPACE, **extra: object) -> DeploymentView:
    return DeploymentView(
        name=name,
        workspace=workspace,
        executor="celery",
        airflow_version="3.3.2",
        components={},
        generation=1,
        extra=extra,
    )


async def apply(target: GrafanaTarget, deployment: DeploymentView | None = None) -> int:
    deployment = deployment or view()
    return (await target.apply(deployment, target.render(deployment))).writes


def workspace_uids(workspace: str = WORKSPACE) -> set[str]:
    return {dashboards.dashboard_uid(workspace, spec.key) for spec in dashboards.SPECS}


# -- applying ---------------------------------------------------------------------------------


async def test_first_apply_creates_folder_datasource_and_dashboards_in_the_fake_grafana(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    writes = await apply(target)

    folder_uid = dashboards.folder_uid(WORKSPACE)
    assert writes == 1 + 1 + DASHBOARD_COUNT == fake_grafana.writes
    assert fake_grafana.folder(folder_uid)["title"] == dashboards.folder_title(WORKSPACE)  # type: ignore[index]
    datasource = fake_grafana.datasource(dashboards.DATASOURCE_UID)
    assert datasource is not None
    assert (datasource["type"], datasource["url"]) == ("prometheus", PROMETHEUS_URL)
    assert fake_grafana.dashboard_uids() == workspace_uids()
    for spec in dashboards.SPECS:
        stored = fake_grafana.dashboard(dashboards.dashboard_uid(WORKSPACE, spec.key))
        assert stored is not None
        assert stored["folderUid"] == folder_uid
        assert stored["dashboard"]["panels"] == dashboards.instance(spec, WORKSPACE)["panels"]


async def test_second_apply_of_unchanged_content_issues_zero_writes_to_the_fake_grafana(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target)
    fake_grafana.reset_counters()

    writes = await apply(target)

    assert writes == 0 == fake_grafana.writes
    assert {method for method, _, _ in fake_grafana.requests} == {"GET"}


async def test_same_workspace_writes_nothing_and_another_workspace_gets_its_own_folder(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target, view("etl-prod"))

    same_workspace = await apply(target, view("etl-dev"))
    other_workspace = await apply(target, view("ml-prod", workspace="ml"))

    assert same_workspace == 0
    assert other_workspace == 1 + DASHBOARD_COUNT  # folder and dashboards; data source exists
    assert fake_grafana.folder(dashboards.folder_uid("ml")) is not None
    assert fake_grafana.dashboard_uids() == workspace_uids() | workspace_uids("ml")


async def test_a_dashboard_edited_in_the_fake_grafana_is_restored_on_the_next_apply(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target)
    uid = dashboards.dashboard_uid(WORKSPACE, "scheduler")
    fake_grafana.edit(uid, title="Someone's scheduler", panels=[])

    writes = await apply(target)

    stored = fake_grafana.dashboard(uid)
    assert writes == 1
    assert stored is not None
    assert stored["version"] == 3
    assert (
        stored["dashboard"]["title"] == dashboards.instance(dashboards.SPECS[2], WORKSPACE)["title"]
    )


async def test_a_save_between_our_read_and_write_gives_412_and_is_re_read_and_re_applied(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target)
    uid = dashboards.dashboard_uid(WORKSPACE, "scheduler")
    fake_grafana.edit(uid, panels=[])
    fake_grafana.bump_version_before_next_save(uid)
    fake_grafana.reset_counters()

    writes = await apply(target)

    saves = [s for m, p, s in fake_grafana.requests if (m, p) == ("POST", "/api/dashboards/db")]
    assert saves == [412, 200]
    assert writes == 1
    stored = fake_grafana.dashboard(uid)
    assert stored is not None
    assert stored["version"] == 4  # ours (1), the user's edit (2), the concurrent save (3), ours
    assert (
        stored["dashboard"]["panels"]
        == dashboards.instance(dashboards.SPECS[2], WORKSPACE)["panels"]
    )


async def test_a_dashboard_that_keeps_changing_under_us_is_a_transient_error(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target)
    uid = dashboards.dashboard_uid(WORKSPACE, "database")
    fake_grafana.edit(uid, panels=[])
    fake_grafana.bump_version_before_next_save(uid, times=MAX_CONFLICT_RETRIES + 1)

    with pytest.raises(TransientError, match="changed under us"):
        await apply(target)


async def test_a_changed_prometheus_url_updates_the_data_source_in_place(
    fake_grafana: FakeGrafana,
) -> None:
    first = GrafanaTarget(grafana_settings(fake_grafana), PROMETHEUS_URL)
    moved = GrafanaTarget(grafana_settings(fake_grafana), "http://prometheus.internal:9090")
    try:
        await apply(first)
        fake_grafana.reset_counters()
        writes = await apply(moved)
    finally:
        await first.aclose()
        await moved.aclose()

    assert writes == 1
    assert (
        "PUT",
        f"/api/datasources/uid/{dashboards.DATASOURCE_UID}",
        200,
    ) in fake_grafana.requests
    datasource = fake_grafana.datasource(dashboards.DATASOURCE_UID)
    assert datasource is not None
    assert datasource["url"] == "http://prometheus.internal:9090"


# -- faults -----------------------------------------------------------------------------------


async def test_fake_grafana_down_is_a_transient_error(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    fake_grafana.stop()

    with pytest.raises(TransientError, match="cannot reach"):
        await apply(target)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_fake_grafana_5xx_and_429_are_transient_errors(
    target: GrafanaTarget, fake_grafana: FakeGrafana, status: int
) -> None:
    fake_grafana.fail_with(status)

    with pytest.raises(TransientError, match=f"HTTP {status}"):
        await apply(target)


async def test_fake_grafana_answering_too_slowly_is_a_transient_error(
    fake_grafana: FakeGrafana,
) -> None:
    fake_grafana.delay = 1.0
    target = GrafanaTarget(grafana_settings(fake_grafana, timeout=0.2), PROMETHEUS_URL)
    try:
        with pytest.raises(TransientError, match=r"no answer within 0\.2s"):
            await apply(target)
    finally:
        await target.aclose()


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_fake_grafana_4xx_is_a_permanent_error(
    target: GrafanaTarget, fake_grafana: FakeGrafana, status: int
) -> None:
    fake_grafana.fail_with(status)

    with pytest.raises(PermanentError, match=f"HTTP {status}"):
        await apply(target)


async def test_a_wrong_token_is_a_permanent_error_that_never_shows_the_token(
    fake_grafana: FakeGrafana, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "glsa_wrong-token-that-must-not-leak"
    target = GrafanaTarget(grafana_settings(fake_grafana, token=SecretStr(secret)))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(PermanentError, match="HTTP 401") as raised:
            await apply(target)
    finally:
        await target.aclose()

    assert secret not in str(raised.value)
    assert secret not in caplog.text
    assert secret not in repr(grafana_settings(fake_grafana, token=SecretStr(secret)))


async def test_a_half_applied_workspace_is_completed_by_the_next_apply(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    fake_grafana.fail_with(503, times=2, path="/api/dashboards/db")
    with pytest.raises(TransientError, match="HTTP 503"):
        await apply(target)
    half = fake_grafana.dashboard_uids()

    writes = await apply(target)

    assert len(half) == DASHBOARD_COUNT - 2
    assert writes == 2
    assert fake_grafana.dashboard_uids() == workspace_uids()


# -- removing ---------------------------------------------------------------------------------


async def test_removing_a_deployment_that_is_not_its_workspaces_last_removes_nothing(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target)
    fake_grafana.reset_counters()

    removed = await target.remove(view(**{LAST_IN_WORKSPACE: False}))
    unknown = await target.remove(view())  # an engine that does not say: keep them

    assert removed.writes == unknown.writes == 0 == fake_grafana.writes
    assert fake_grafana.dashboard_uids() == workspace_uids()


async def test_removing_a_workspaces_last_deployment_removes_its_dashboards_and_folder_only(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target, view("etl-prod"))
    await apply(target, view("ml-prod", workspace="ml"))

    removed = await target.remove(view("etl-prod", **{LAST_IN_WORKSPACE: True}))
    again = await target.remove(view("etl-prod", **{LAST_IN_WORKSPACE: True}))

    assert removed.writes == DASHBOARD_COUNT + 1
    assert again.writes == 0
    assert fake_grafana.folder(dashboards.folder_uid(WORKSPACE)) is None
    assert fake_grafana.dashboard_uids() == workspace_uids("ml")
    assert fake_grafana.datasource(dashboards.DATASOURCE_UID) is not None


async def test_removing_keeps_the_folder_when_a_user_keeps_a_dashboard_in_it(
    target: GrafanaTarget, fake_grafana: FakeGrafana
) -> None:
    await apply(target)
    folder_uid = dashboards.folder_uid(WORKSPACE)
    fake_grafana.add_dashboard("users-own", "My own dashboard", folder_uid)

    removed = await target.remove(view(**{LAST_IN_WORKSPACE: True}))

    assert removed.writes == DASHBOARD_COUNT
    assert fake_grafana.folder(folder_uid) is not None
    assert fake_grafana.dashboard_uids() == {"users-own"}


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_requests_in_flight_never_exceed_the_concurrency_setting(
    fake_grafana: FakeGrafana, concurrency: int
) -> None:
    fake_grafana.delay = 0.05
    client = GrafanaClient(fake_grafana.url, fake_grafana.token, timeout=5, concurrency=concurrency)
    try:
        await client.ensure_folder("f", "F")
        models = dashboards.instances(WORKSPACE)
        fake_grafana.reset_counters()
        writes = await client.upsert_dashboards(models, "f")
    finally:
        await client.aclose()

    assert writes == DASHBOARD_COUNT
    assert fake_grafana.max_in_flight == concurrency


# -- through the provisioning engine ----------------------------------------------------------


@pytest.fixture
async def app(
    settings: Settings, clock: FrozenClock, fake_grafana: FakeGrafana
) -> AsyncIterator[FastAPI]:
    """The app with the Grafana target as its only target, pointed at the fake Grafana."""
    from tests.conftest import _empty_tables

    await _empty_tables(settings.database.url)
    quiet = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
    )
    target = GrafanaTarget(grafana_settings(fake_grafana), PROMETHEUS_URL)
    application = create_app(quiet, clock, targets=[target])
    async with application.router.lifespan_context(application):
        yield application
    await target.aclose()


async def sync(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict[str, object]:
    response = await client.post(f"/api/v1/deployments/{name}/provisioning/sync", headers=headers)
    assert response.status_code == 200, response.text
    (run,) = [r for r in response.json()["targets"] if r["target"] == "grafana"]
    return run  # type: ignore[no-any-return]


async def test_engine_records_fake_grafana_down_as_failed_with_its_message_then_completes(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    fake_grafana: FakeGrafana,
    clock: FrozenClock,
) -> None:
    await create_workspace(client, admin, WORKSPACE)
    await create_deployment(client, admin, WORKSPACE, "etl-prod")
    fake_grafana.fail_with(503)

    failed = await sync(client, admin, "etl-prod")
    fake_grafana.fail_with(None)
    clock.advance(3600)  # past any backoff
    applied = await sync(client, admin, "etl-prod")
    fake_grafana.reset_counters()
    unchanged = await sync(client, admin, "etl-prod")

    assert failed["status"] == "failed"
    assert "grafana" in str(failed["error"])
    assert "HTTP 503" in str(failed["error"])
    assert (applied["status"], applied["writes"]) == ("succeeded", 2 + DASHBOARD_COUNT)
    assert (unchanged["status"], unchanged["writes"]) == ("succeeded", 0)
    assert fake_grafana.requests == []  # the engine skipped it: same content hash
