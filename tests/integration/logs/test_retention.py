"""Per-deployment retention: the periodic job deletes a deployment's expired logs where the
cluster's data stream lifecycle does not (the integ-test build has none), and deleting a
deployment deletes its logs unless asked to keep them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from app.core.clock import FrozenClock
from app.integrations.elasticsearch import ElasticsearchClient
from app.jobs.scheduler import enforce_log_retention, reconcile_due
from app.observability.elasticsearch_target import ElasticsearchTarget, log_data_stream
from tests.integration.logs.conftest import (
    RUN_ID,
    LogIndex,
    airflow3_task_lines,
    register,
    unique,
)


async def _provision_template(app: Any) -> ElasticsearchTarget:
    """Provision registered deployments as the engine's periodic job does (the Elasticsearch
    target stores each one's index template), and return that target."""
    await reconcile_due(app.state.context, app.state.targets)
    return next(t for t in app.state.targets if isinstance(t, ElasticsearchTarget))


async def count(client: ElasticsearchClient, stream: str) -> int:
    await client.refresh(stream)
    return await client.count(stream)


async def test_retention_with_a_short_period_removes_old_data(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    clock: FrozenClock,
    log_index: LogIndex,
) -> None:
    deployment = unique("short")
    stream = log_data_stream(deployment)
    await register(client, admin, deployment, retention_days=1)
    target = await _provision_template(app)
    es = target.client()
    context, targets = app.state.context, app.state.targets
    if (await es.capabilities()).data_stream_lifecycle:
        # The cluster enforces the stream's lifecycle itself; the job leaves it alone.
        log_index.write(deployment, airflow3_task_lines(deployment, 1))
        assert await es.data_stream_retention(stream) == "1d"
        await enforce_log_retention(context, targets)
        assert await count(es, stream) == 2
        return

    now = clock.now()
    # A try of three days ago, shipped late, into the stream's only (write) index.
    log_index.write(deployment, airflow3_task_lines(deployment, 50, start=now - timedelta(days=3)))
    await enforce_log_retention(context, targets)
    assert await count(es, stream) == 0

    # Fresh logs stay while they are younger than the retention...
    log_index.write(
        deployment,
        airflow3_task_lines(deployment, 20, start=now - timedelta(hours=1), try_number=2),
    )
    await enforce_log_retention(context, targets)
    assert await count(es, stream) == 21
    page = await client.get(
        f"/api/v1/deployments/{deployment}/logs/tasks/sextant_parallel/{RUN_ID}/sleep",
        params={"try_number": 2},
        headers=admin,
    )
    assert len(page.json()["lines"]) == 20
    gone = await client.get(
        f"/api/v1/deployments/{deployment}/logs/tasks/sextant_parallel/{RUN_ID}/sleep",
        headers=admin,
    )
    assert gone.json()["lines"] == []

    # ... and go once they are older.
    clock.advance(timedelta(days=2).total_seconds())
    await enforce_log_retention(context, targets)
    assert await count(es, stream) == 0


async def test_a_deployment_with_a_longer_retention_keeps_the_same_old_logs(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], clock: FrozenClock,
    log_index: LogIndex,
) -> None:  # fmt: skip
    deployment = unique("long")
    await register(client, admin, deployment, retention_days=7)
    target = await _provision_template(app)
    log_index.write(
        deployment, airflow3_task_lines(deployment, 10, start=clock.now() - timedelta(days=3))
    )
    await enforce_log_retention(app.state.context, app.state.targets)
    assert await count(target.client(), log_data_stream(deployment)) == 11


async def test_deleting_a_deployment_deletes_its_logs_unless_asked_to_keep_them(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], log_index: LogIndex
) -> None:
    kept, dropped = unique("kept"), unique("dropped")
    es = None
    for deployment in (kept, dropped):
        await register(client, admin, deployment)
        es = (await _provision_template(app)).client()
        log_index.write(deployment, airflow3_task_lines(deployment, 5))
    assert es is not None

    removed = await client.delete(f"/api/v1/deployments/{dropped}", headers=admin)
    assert removed.status_code == 204, removed.text
    assert await count(es, log_data_stream(dropped)) == 0

    removed = await client.delete(
        f"/api/v1/deployments/{kept}", params={"keep_logs": "true"}, headers=admin
    )
    assert removed.status_code == 204, removed.text
    assert await count(es, log_data_stream(kept)) == 6
