"""The provisioning engine against the real databases, with fake targets (named as fakes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.core.clock import FrozenClock
from app.core.settings import Settings
from app.integrations.errors import PermanentError, TransientError
from app.jobs.scheduler import reconcile_due
from app.main import create_app
from tests.factories import create_deployment, create_workspace
from tests.fakes.targets import FakeTarget


@pytest.fixture
def targets() -> list[FakeTarget]:
    return [FakeTarget("runtime"), FakeTarget("prometheus"), FakeTarget("grafana")]


@pytest.fixture
async def app(
    settings: Settings, clock: FrozenClock, targets: list[FakeTarget]
) -> AsyncIterator[FastAPI]:
    from tests.conftest import _empty_tables

    await _empty_tables(settings.database.url)
    quiet = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
    )
    application = create_app(quiet, clock, targets=list(targets))  # type: ignore[arg-type]
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def deployment(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await create_workspace(client, admin, "data-eng")
    return (await create_deployment(client, admin, "data-eng", "etl-prod"))["name"]


async def sync(client: httpx.AsyncClient, admin: dict[str, str], force: bool = False) -> dict:  # type: ignore[type-arg]
    response = await client.post(
        "/api/v1/deployments/etl-prod/provisioning/sync",
        params={"force": str(force).lower()},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def by_target(state: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {run["target"]: run for run in state["targets"]}


@pytest.mark.usefixtures("deployment")
async def test_first_sync_applies_every_target_and_a_second_writes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], targets: list[FakeTarget]
) -> None:
    first = by_target(await sync(client, admin))
    second = by_target(await sync(client, admin))

    assert {t: r["status"] for t, r in first.items()} == dict.fromkeys(first, "succeeded")
    assert all(r["writes"] == 1 for r in first.values())
    assert all(r["writes"] == 0 for r in second.values())
    assert [len(t.calls) for t in targets] == [1, 1, 1]
    assert first["grafana"]["content_hash"] == second["grafana"]["content_hash"]


@pytest.mark.usefixtures("deployment")
async def test_a_spec_change_reapplies_and_a_forced_sync_applies_unchanged_content(
    client: httpx.AsyncClient, admin: dict[str, str], targets: list[FakeTarget]
) -> None:
    await sync(client, admin)
    await client.patch("/api/v1/deployments/etl-prod", json={"max_workers": 3}, headers=admin)
    await client.patch(
        "/api/v1/deployments/etl-prod",
        json={"components": {"scheduler": {"replicas": 2}}},
        headers=admin,
    )
    changed = by_target(await sync(client, admin))
    forced = by_target(await sync(client, admin, force=True))

    assert all(r["applied_generation"] == 3 for r in changed.values())
    assert all(r["writes"] == 1 for r in changed.values())
    assert [len(t.calls) for t in targets] == [3, 3, 3]
    assert all(r["writes"] == 0 for r in forced.values())


@pytest.mark.usefixtures("deployment")
async def test_a_transient_failure_is_recorded_retried_with_backoff_and_isolated(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    targets: list[FakeTarget],
    clock: FrozenClock,
    app: FastAPI,
) -> None:
    grafana = targets[2]
    grafana.fail_with = TransientError

    failed = by_target(await sync(client, admin))
    deployment = (await client.get("/api/v1/deployments/etl-prod", headers=admin)).json()

    assert failed["grafana"]["status"] == "failed"
    assert failed["grafana"]["error"] == "grafana: upstream said no"
    assert failed["grafana"]["attempts"] == 1
    assert failed["runtime"]["status"] == failed["prometheus"]["status"] == "succeeded"
    assert deployment["status"] == "degraded"
    assert "grafana: upstream said no" in deployment["status_reason"]

    # Not due before the backoff has passed, due after it.
    await reconcile_due(app.state.context, targets)  # type: ignore[arg-type]
    assert len(grafana.calls) == 1
    grafana.fail_with = None
    clock.advance(5)
    await reconcile_due(app.state.context, targets)  # type: ignore[arg-type]
    healed = by_target(
        (await client.get("/api/v1/deployments/etl-prod/provisioning", headers=admin)).json()
    )
    assert healed["grafana"]["status"] == "succeeded"
    assert healed["grafana"]["attempts"] == 0
    assert [len(t.calls) for t in targets] == [1, 1, 2]


@pytest.mark.usefixtures("deployment")
async def test_unconfigured_targets_are_skipped(
    client: httpx.AsyncClient, admin: dict[str, str], targets: list[FakeTarget]
) -> None:
    targets[1].is_configured = False
    state = by_target(await sync(client, admin))
    assert state["prometheus"]["status"] == "skipped"
    assert targets[1].calls == []


@pytest.mark.usefixtures("deployment")
async def test_the_job_provisions_new_deployments_and_only_them(
    client: httpx.AsyncClient, admin: dict[str, str], targets: list[FakeTarget], app: FastAPI
) -> None:
    await reconcile_due(app.state.context, targets)  # type: ignore[arg-type]
    await reconcile_due(app.state.context, targets)  # type: ignore[arg-type]
    assert [len(t.calls) for t in targets] == [1, 1, 1]
    state = (await client.get("/api/v1/deployments/etl-prod/provisioning", headers=admin)).json()
    assert state["status"] == "provisioning"


async def test_deleting_tears_down_in_reverse_order_and_only_that_deployment(
    client: httpx.AsyncClient, admin: dict[str, str], targets: list[FakeTarget], app: FastAPI
) -> None:
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", "etl-prod")
    await create_deployment(client, admin, "data-eng", "etl-dev")
    await reconcile_due(app.state.context, targets)  # type: ignore[arg-type]

    response = await client.delete("/api/v1/deployments/etl-prod", headers=admin)

    assert response.status_code == 204
    assert [t.calls[-1] for t in reversed(targets)] == [("remove", "etl-prod")] * 3
    assert all(set(t.store) == {f"{t.name}/etl-dev.txt"} for t in targets)


@pytest.mark.usefixtures("deployment")
async def test_a_failing_teardown_keeps_the_deployment_deleting_until_it_succeeds(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    targets: list[FakeTarget],
    clock: FrozenClock,
    app: FastAPI,
) -> None:
    await sync(client, admin)
    targets[1].fail_with = PermanentError

    response = await client.delete("/api/v1/deployments/etl-prod", headers=admin)

    assert response.status_code == 202
    assert response.json()["status"] == "deleting"
    still = await client.get("/api/v1/deployments/etl-prod", headers=admin)
    assert still.json()["status"] == "deleting"
    blocked = await client.patch(
        "/api/v1/deployments/etl-prod", json={"description": "x"}, headers=admin
    )
    assert blocked.status_code == 409

    targets[1].fail_with = None
    clock.advance(900)
    await reconcile_due(app.state.context, targets)  # type: ignore[arg-type]
    gone = await client.get("/api/v1/deployments/etl-prod", headers=admin)
    assert gone.status_code == 404
