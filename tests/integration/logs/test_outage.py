"""Elasticsearch down: every log read answers 503 with a clear message, quickly, and the API reads
again by itself once Elasticsearch is back (the session's server is stopped and restarted)."""

from __future__ import annotations

import time
from typing import Any

from app.core.security import Role
from tests.harness.components import ElasticsearchServer
from tests.integration.logs.conftest import (
    RUN_ID,
    LogIndex,
    airflow3_task_lines,
    asgi_client,
    component_lines,
    elasticsearch_stopped,
    issue_token,
    register,
    unique,
)


async def test_elasticsearch_down_is_503_then_the_api_recovers_by_itself(
    single_app: Any, elasticsearch_server: ElasticsearchServer, log_index: LogIndex
) -> None:
    deployment = unique("outage")
    log_index.prepare(deployment)
    log_index.write(
        deployment,
        airflow3_task_lines(deployment, 4)
        + component_lines(deployment, [("scheduler", "info", "up")]),
    )
    base = f"/api/v1/deployments/{deployment}/logs"
    reads = [f"{base}/tasks/sextant_parallel/{RUN_ID}/sleep", base, f"{base}/follow?max_seconds=5"]
    async with asgi_client(single_app) as client:
        admin = await issue_token(single_app, Role.SYSTEM_ADMIN)
        await register(client, admin, deployment)
        assert (await client.get(reads[0], headers=admin)).status_code == 200

        with elasticsearch_stopped(elasticsearch_server):
            for path in reads:
                started = time.monotonic()
                response = await client.get(path, headers=admin)
                assert time.monotonic() - started < 10
                assert response.status_code == 503, (path, response.text)
                error = response.json()["error"]
                assert error["code"] == "unavailable"
                assert error["message"].startswith("Elasticsearch is unavailable")
                assert "cannot connect" in error["message"]
            # Unrelated endpoints do not depend on Elasticsearch.
            assert (
                await client.get(f"/api/v1/deployments/{deployment}", headers=admin)
            ).status_code == 200

        # Same app, same client objects: no restart of Sextant.
        task = await client.get(reads[0], headers=admin)
        assert task.status_code == 200, task.text
        assert len(task.json()["lines"]) == 4
        components = await client.get(reads[1], headers=admin)
        assert [line["message"] for line in components.json()["lines"]] == ["up"]
