"""A scheduler heartbeat that stops becomes a FIRING e-mail, and its return a RESOLVED one.

Every hop is real: StatsD heartbeats over UDP → statsd_exporter with Sextant's mapping
(deploy/statsd/mappings.yml) → Prometheus scraping it every second through the file_sd file
Sextant renders (identity labels `workspace`, `deployment` attached at ingest) → Sextant's
evaluator and outbox (in-process, scheduler on: evaluation every second, delivery every half
second, PostgreSQL) → aiosmtpd. The heartbeats come from the test, not from an Airflow
scheduler; the runtime issue's e2e tests run a real one.

The rule's own threshold (60 s, `for: 0s`) is lowered for the deployment through the API to
THRESHOLD seconds. The measure resolves time in 10 s steps (see
alert_rules/airflow.rules.yml), so a healthy heartbeat reads up to ~11 s: THRESHOLD stays above.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from app.core.clock import SystemClock
from app.core.security import Role
from app.core.settings import (
    AlertsSettings,
    DatabaseSettings,
    PrometheusSettings,
    SchedulerSettings,
    Settings,
    SmtpSettings,
)
from app.main import create_app
from app.tokens.service import CLI_PRINCIPAL, tokens
from tests.harness.components import PrometheusServer, StatsdExporter
from tests.harness.smtp import SmtpSink
from tests.integration.alerting._sextant import (
    HEARTBEAT_LINE,
    HEARTBEAT_RULE,
    heartbeat_series,
    identity_prometheus_config,
)

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
MAPPING = REPO_ROOT / "deploy" / "statsd" / "mappings.yml"
WORKSPACE = "data-eng"
DEPLOYMENT = "etl-prod"
ONCALL = "oncall@example.com"
TEAM = "team@example.com"
THRESHOLD = 15
BEAT_EVERY = 0.5

T = TypeVar("T")


async def until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `condition` (without blocking the loop Sextant runs on) until it is truthy."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last seen: {value!r})")
        await asyncio.sleep(0.2)
    return value


class Heartbeat:
    """A scheduler's StatsD heartbeat, one increment every BEAT_EVERY seconds while running."""

    def __init__(self, exporter: StatsdExporter) -> None:
        self.exporter = exporter
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            self.exporter.send(HEARTBEAT_LINE)
            await asyncio.sleep(BEAT_EVERY)

    def start(self) -> None:
        """Start beating."""
        self._task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        """Stop beating (the scheduler stalls)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@pytest.fixture
def exporter(statsd_exporter_factory: Callable[..., StatsdExporter]) -> StatsdExporter:
    """A statsd_exporter with Sextant's mapping."""
    if not MAPPING.exists():
        pytest.skip(f"{MAPPING.relative_to(REPO_ROOT)} does not exist yet (observability issue)")
    return statsd_exporter_factory(mapping_path=MAPPING)


@pytest.fixture
def prometheus(
    prometheus_factory: Callable[..., PrometheusServer], exporter: StatsdExporter, tmp_path: Path
) -> PrometheusServer:
    """A Prometheus scraping the exporter every second as the deployment's file_sd target."""
    config = identity_prometheus_config(tmp_path, exporter, WORKSPACE, DEPLOYMENT)
    return prometheus_factory(config=config)


@pytest.fixture
async def sextant(
    postgres_url: str, prometheus: PrometheusServer, smtp_sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    """Sextant in-process with its scheduler running, on PostgreSQL, Prometheus and the sink."""
    settings = Settings(
        _env_file=None,
        database=DatabaseSettings(url=postgres_url),
        prometheus=PrometheusSettings(url=prometheus.url),
        smtp=SmtpSettings(host=smtp_sink.host, port=smtp_sink.port, sender="sextant@example.com"),
        alerts=AlertsSettings(interval=1, delivery_interval=BEAT_EVERY),
        scheduler=SchedulerSettings(heartbeat_interval=0.5),
    )
    app = create_app(settings, SystemClock(), targets=[])
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(sextant: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with a system administrator's token."""
    async with sextant.state.context.sessionmaker() as session:
        created = await tokens.create(
            session, CLI_PRINCIPAL, name="e2e", role=Role.SYSTEM_ADMIN,
            workspace_name=None, deployment_name=None,
        )  # fmt: skip
        await session.commit()
    transport = httpx.ASGITransport(app=sextant)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://sextant.test",
        headers={"Authorization": f"Bearer {created.token}"},
    ) as c:
        yield c


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 201, f"POST {path}: {response.text}"


def _received(sink: SmtpSink, prefix: str, count: int) -> list[EmailMessage]:
    """The messages whose subject starts with `prefix`, once there are `count` of them."""
    messages = [m for m in sink.messages() if str(m["Subject"]).startswith(prefix)]
    return messages if len(messages) >= count else []


def _heartbeats(prometheus: PrometheusServer) -> float:
    """The deployment's heartbeat counter as Prometheus last scraped it (0 before)."""
    return max((float(s["value"][1]) for s in heartbeat_series(prometheus, DEPLOYMENT)), default=0)


async def _alert_status(client: httpx.AsyncClient) -> str | None:
    alerts = (await client.get(f"/api/v1/deployments/{DEPLOYMENT}/alerts")).json()
    return next((a["status"] for a in alerts if a["rule"] == HEARTBEAT_RULE), None)


async def test_a_stalled_heartbeat_emails_firing_then_resolved(
    client: httpx.AsyncClient,
    exporter: StatsdExporter,
    prometheus: PrometheusServer,
    smtp_sink: SmtpSink,
) -> None:
    """Stop the heartbeat: FIRING to every recipient, with the chart; resume it: RESOLVED."""
    await _post(client, "/api/v1/workspaces", {"name": WORKSPACE})
    await _post(client, f"/api/v1/workspaces/{WORKSPACE}/deployments", {"name": DEPLOYMENT})
    await _post(client, f"/api/v1/deployments/{DEPLOYMENT}/alert-recipients", {"email": ONCALL})
    await _post(client, f"/api/v1/workspaces/{WORKSPACE}/alert-recipients", {"email": TEAM})
    response = await client.patch(
        f"/api/v1/deployments/{DEPLOYMENT}/alert-rules/{HEARTBEAT_RULE}",
        json={"threshold": f"{THRESHOLD}s", "for": "0s"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["threshold"] == THRESHOLD

    heartbeat = Heartbeat(exporter)
    heartbeat.start()
    try:
        # A healthy scheduler for a few seconds: Prometheus sees the counter go up.
        await until(lambda: _heartbeats(prometheus) >= 8, 20, "Prometheus saw eight heartbeats")
        assert smtp_sink.messages() == []
        assert await _alert_status(client) in (None, "inactive")

        await heartbeat.stop()
        firing = await until(lambda: _received(smtp_sink, "[FIRING]", 2), 60, "the FIRING e-mails")
        assert await _alert_status(client) == "firing"

        assert sorted(str(m["X-Envelope-To"]) for m in firing) == [ONCALL, TEAM]
        for message in firing:
            assert str(message["To"]) == str(message["X-Envelope-To"])
            assert re.fullmatch(
                rf"\[FIRING\] Scheduler heartbeat missing \d+ s — {DEPLOYMENT}",
                str(message["Subject"]),
            ), message["Subject"]
            parts = {part.get_content_type(): part for part in message.walk()}
            assert {"text/plain", "text/html", "image/png"} <= set(parts)
            assert parts["image/png"].get_content().startswith(b"\x89PNG\r\n\x1a\n")
            assert f"Workspace: {WORKSPACE}" in parts["text/plain"].get_content()

        heartbeat.start()
        resolved = await until(
            lambda: _received(smtp_sink, "[RESOLVED]", 2), 45, "the RESOLVED e-mails"
        )
    finally:
        await heartbeat.stop()

    assert sorted(str(m["X-Envelope-To"]) for m in resolved) == [ONCALL, TEAM]
    assert {str(m["Subject"]) for m in resolved} == {
        f"[RESOLVED] Scheduler heartbeat missing — {DEPLOYMENT}"
    }
    assert await _alert_status(client) == "resolved"
    # One FIRING and one RESOLVED per recipient, nothing else.
    assert len(smtp_sink.messages()) == 4
