"""A real Alertmanager, configured with Sextant's rendered configuration, posting to a real
Sextant HTTP server: its alerts reach the recipients once, even when Sextant's own evaluator
fires the same alert."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.alerting.dependencies import METRIC_SOURCE
from app.core.clock import SystemClock
from app.core.security import Role
from app.core.settings import AlertsSettings, ServerSettings, Settings, SmtpSettings
from app.jobs.scheduler import deliver_notifications, evaluate_alerts
from app.main import create_app
from app.observability.alertmanager import Timing, render
from tests.conftest import _empty_tables
from tests.factories import add_recipient, create_deployment, create_workspace
from tests.fakes.metrics import FakeMetricSource
from tests.harness.components import AlertmanagerServer
from tests.harness.smtp import SmtpSink

RULE = "AirflowSchedulerHeartbeatMissing"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def served(settings: Settings, smtp_sink: SmtpSink) -> AsyncIterator[tuple[FastAPI, str]]:
    """Sextant served over real HTTP on 127.0.0.1 (the scheduler off: the test drives it)."""
    await _empty_tables(settings.database.url)
    port = _free_port()
    configured = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"enabled": False}),
            "server": ServerSettings(port=port, public_url=f"http://127.0.0.1:{port}"),
            "smtp": SmtpSettings(host=smtp_sink.host, port=smtp_sink.port),
            "alerts": AlertsSettings(),
        }
    )
    app = create_app(configured, SystemClock(), targets=[])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def _token(app: FastAPI, role: Role) -> str:
    from app.tokens.service import CLI_PRINCIPAL, tokens

    async with app.state.context.sessionmaker() as session:
        created = await tokens.create(
            session,
            CLI_PRINCIPAL,
            name=role.value,
            role=role,
            workspace_name=None,
            deployment_name=None,
        )
        await session.commit()
    return created.token


def _post_alerts(alertmanager: AlertmanagerServer, alerts: list[dict[str, object]]) -> None:
    request = urllib.request.Request(
        f"{alertmanager.url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_alertmanager_alerts_reach_recipients_once_whatever_the_source(
    served: tuple[FastAPI, str],
    alertmanager_factory: Callable[..., AlertmanagerServer],
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    app, base = served
    admin = {"Authorization": f"Bearer {await _token(app, Role.SYSTEM_ADMIN)}"}
    async with httpx.AsyncClient(base_url=base) as client:
        await create_workspace(client, admin, "data-eng")
        await create_deployment(client, admin, "data-eng", "etl-prod")
        await add_recipient(
            client, admin, "/api/v1/deployments/etl-prod/alert-recipients", "oncall@example.com"
        )

    token_file = tmp_path / "sextant-token"
    token_file.write_text(await _token(app, Role.ALERTMANAGER))
    token_file.chmod(0o644)
    config = render(
        base,
        credentials_file=str(token_file),
        timing=Timing(group_wait="1s", group_interval="1s", repeat_interval="1h"),
    )
    alertmanager = alertmanager_factory(config=config)

    # Sextant's own evaluator fires the alert first...
    metrics = FakeMetricSource()
    metrics.set(RULE, "etl-prod", 200.0, "data-eng")
    app.state.context.extras[METRIC_SOURCE] = metrics
    await evaluate_alerts(app.state.context)
    await asyncio.sleep(0.05)
    app.state.context.clock = _Shifted(timedelta(seconds=45))
    await evaluate_alerts(app.state.context)
    await deliver_notifications(app.state.context)
    assert [m["Subject"] for m in smtp_sink.messages()] == [
        "[FIRING] Scheduler heartbeat missing 200 s — etl-prod"
    ]

    # ...then Prometheus' copy of the same rule arrives through Alertmanager: nothing new.
    starts = datetime.now(UTC) - timedelta(minutes=1)
    labels = {
        "alertname": RULE,
        "deployment": "etl-prod",
        "workspace": "data-eng",
        "severity": "critical",
    }
    _post_alerts(
        alertmanager,
        [
            {
                "labels": labels,
                "startsAt": starts.isoformat(),
                "annotations": {"summary": "from prometheus"},
            }
        ],
    )
    # And a rule only Prometheus evaluates, for the same deployment: delivered.
    other = {**labels, "alertname": "AirflowDagImportErrors", "severity": "warning"}
    _post_alerts(alertmanager, [{"labels": other, "startsAt": starts.isoformat()}])

    async def delivered() -> int:
        await deliver_notifications(app.state.context)
        return len(smtp_sink.messages())

    deadline = asyncio.get_running_loop().time() + 30
    while await delivered() < 2:
        assert asyncio.get_running_loop().time() < deadline, "Alertmanager's alert never arrived"
        await asyncio.sleep(0.3)
    await asyncio.sleep(3)  # Alertmanager re-posts groups every second; nothing more may come
    await delivered()
    subjects = sorted(m["Subject"] for m in smtp_sink.messages())
    assert subjects == [
        "[FIRING] Dag import errors — etl-prod",
        "[FIRING] Scheduler heartbeat missing 200 s — etl-prod",
    ]

    async with httpx.AsyncClient(base_url=base) as client:
        bad_token = await client.post(
            "/api/v1/alertmanager/webhook",
            json={"alerts": []},
            headers=admin | {"Authorization": "Bearer nope"},
        )
        alerts = (await client.get("/api/v1/deployments/etl-prod/alerts", headers=admin)).json()
    assert bad_token.status_code == 401
    assert {(a["rule"], a["source"]) for a in alerts} == {
        (RULE, "sextant"),
        ("AirflowDagImportErrors", "alertmanager"),
    }


class _Shifted:
    """The system clock, shifted: lets the evaluator's `for` elapse without waiting."""

    def __init__(self, shift: timedelta) -> None:
        self.shift = shift

    def now(self) -> datetime:
        return datetime.now(UTC) + self.shift
