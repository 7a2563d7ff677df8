"""From metrics to e-mails: evaluation, outbox, delivery to a real SMTP server, and the faults.

The metric source is a fake (see tests/fakes/metrics.py) so that time and values are set by the
test; the database, the SMTP server and the pipeline are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.alerting.dependencies import METRIC_SOURCE
from app.core.clock import FrozenClock
from app.core.settings import AlertsSettings, Settings, SmtpSettings
from app.jobs.scheduler import deliver_notifications, evaluate_alerts
from app.main import create_app
from tests.conftest import _empty_tables
from tests.factories import add_recipient, create_deployment, create_workspace
from tests.fakes.metrics import FakeMetricSource
from tests.harness.smtp import SmtpSink

HEARTBEAT = "AirflowSchedulerHeartbeatMissing"


@pytest.fixture
def metrics() -> FakeMetricSource:
    return FakeMetricSource()


@pytest.fixture
async def app(
    settings: Settings, clock: FrozenClock, smtp_sink: SmtpSink, metrics: FakeMetricSource
) -> AsyncIterator[FastAPI]:
    await _empty_tables(settings.database.url)
    configured = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"enabled": False}),
            "smtp": SmtpSettings(host=smtp_sink.host, port=smtp_sink.port,
                                 **{"from": "sextant@example.com"}),
            "alerts": AlertsSettings(system_recipients=["platform@example.com"],
                                     monitoring_grace=60),
        }
    )  # fmt: skip
    application = create_app(configured, clock, targets=[])
    async with application.router.lifespan_context(application):
        context = application.state.context
        context.extras[METRIC_SOURCE] = metrics
        yield application


@pytest.fixture
async def fleet(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_workspace(client, admin, "data-eng")
    await create_deployment(client, admin, "data-eng", "etl-prod")
    await create_deployment(client, admin, "data-eng", "etl-dev")
    await add_recipient(client, admin, "/api/v1/deployments/etl-prod/alert-recipients",
                        "oncall@example.com", min_severity="critical")  # fmt: skip
    await add_recipient(client, admin, "/api/v1/deployments/etl-prod/alert-recipients",
                        "quiet@example.com", min_severity="critical")  # fmt: skip
    await add_recipient(client, admin, "/api/v1/workspaces/data-eng/alert-recipients",
                        "team@example.com", min_severity="warning")  # fmt: skip
    await add_recipient(client, admin, "/api/v1/workspaces/data-eng/alert-recipients",
                        "infos@example.com", min_severity="info")  # fmt: skip
    await add_recipient(client, admin, "/api/v1/deployments/etl-dev/alert-recipients",
                        "dev@example.com", min_severity="info")  # fmt: skip


async def tick(app: FastAPI, clock: FrozenClock, seconds: float = 15) -> None:
    """One evaluation and one delivery round, then move the clock on."""
    await evaluate_alerts(app.state.context)
    await deliver_notifications(app.state.context)
    clock.advance(seconds)


def inbox(sink: SmtpSink) -> list[tuple[str, str]]:
    return sorted((m["To"], m["Subject"]) for m in sink.messages())


@pytest.mark.usefixtures("fleet")
async def test_a_stalled_scheduler_emails_its_recipients_then_resolves(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    metrics.set(HEARTBEAT, "etl-prod", 75.0, "data-eng")
    # Firing at once: the measure is already a duration, so the rule has `for: 0s`.
    await tick(app, clock)
    assert len(smtp_sink.messages()) == 4
    await tick(app, clock)
    await tick(app, clock)

    subject = "[FIRING] Scheduler heartbeat missing 75 s — etl-prod"
    assert inbox(smtp_sink) == [
        ("infos@example.com", subject), ("oncall@example.com", subject),
        ("quiet@example.com", subject), ("team@example.com", subject),
    ]  # fmt: skip
    alerts = (await client.get("/api/v1/deployments/etl-prod/alerts", headers=admin)).json()
    assert [(a["rule"], a["status"], a["silenced"]) for a in alerts] == [
        (HEARTBEAT, "firing", False)
    ]
    message = smtp_sink.messages()[0]
    assert message["Message-ID"].startswith("<sextant.")
    assert any(p.get_content_type() == "image/png" for p in message.walk())

    smtp_sink.clear()
    metrics.set(HEARTBEAT, "etl-prod", 4.0)
    await tick(app, clock)
    assert [s for _, s in inbox(smtp_sink)] == [
        "[RESOLVED] Scheduler heartbeat missing — etl-prod"
    ] * 4


@pytest.mark.usefixtures("fleet")
async def test_each_alert_is_sent_once_and_repeated_after_the_interval(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink
) -> None:
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    for _ in range(10):
        await tick(app, clock)
    assert len(smtp_sink.messages()) == 4
    clock.advance(4 * 3600)
    await tick(app, clock)
    assert len(smtp_sink.messages()) == 8


@pytest.mark.usefixtures("fleet")
async def test_a_silence_holds_back_emails_but_the_alert_still_fires(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    end = (clock.now().replace(microsecond=0)).isoformat().replace("+00:00", "Z")
    created = await client.post(
        "/api/v1/silences",
        json={"matchers": [{"label": "deployment", "value": "etl-prod"}],
              "ends_at": end.replace("12:00:00", "13:00:00"), "comment": "maintenance"},
        headers=admin,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    for _ in range(4):
        await tick(app, clock)

    assert smtp_sink.messages() == []
    alerts = (await client.get("/api/v1/deployments/etl-prod/alerts", headers=admin)).json()
    assert [(a["status"], a["silenced"]) for a in alerts] == [("firing", True)]

    clock.advance(3600)  # the silence expires on its own
    await tick(app, clock)
    assert len(smtp_sink.messages()) == 4


@pytest.mark.usefixtures("fleet")
async def test_a_removed_recipient_gets_nothing_more(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    # The round delivers what it queued at once; with SMTP down the e-mails stay queued.
    smtp_sink.stop()
    await evaluate_alerts(app.state.context)
    listed = (await client.get("/api/v1/deployments/etl-prod/alert-recipients",
                               headers=admin)).json()  # fmt: skip
    quiet = next(r for r in listed["items"] if r["email"] == "quiet@example.com")
    await client.delete(f"/api/v1/deployments/etl-prod/alert-recipients/{quiet['id']}",
                        headers=admin)  # fmt: skip
    smtp_sink.start()

    clock.advance(60)  # past the first retry's backoff
    await deliver_notifications(app.state.context)
    assert len(inbox(smtp_sink)) == 3
    clock.advance(4 * 3600)
    await tick(app, clock)

    assert "quiet@example.com" not in {to for to, _ in inbox(smtp_sink)}
    log = (await client.get("/api/v1/deployments/etl-prod/notifications", headers=admin)).json()
    assert {n["status"] for n in log["items"] if n["email"] == "quiet@example.com"} == {"cancelled"}


@pytest.mark.usefixtures("fleet")
async def test_prometheus_down_resolves_nothing_and_raises_one_monitoring_alert(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    for _ in range(3):
        await tick(app, clock)
    smtp_sink.clear()

    metrics.down = True
    for _ in range(8):
        await tick(app, clock)

    received = inbox(smtp_sink)
    assert len(received) == 1
    assert received[0][0] == "platform@example.com"
    assert received[0][1].startswith("[FIRING] Sextant monitoring unavailable")
    alerts = (await client.get("/api/v1/deployments/etl-prod/alerts", headers=admin)).json()
    assert alerts[0]["status"] == "firing"

    smtp_sink.clear()
    metrics.down = False
    await tick(app, clock)
    subjects = [s for _, s in inbox(smtp_sink)]
    assert subjects == ["[RESOLVED] Sextant monitoring unavailable"]


@pytest.mark.usefixtures("fleet")
async def test_smtp_down_delays_delivery_but_loses_nothing(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    smtp_sink.stop()
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    for _ in range(4):
        await tick(app, clock)
    log = (await client.get("/api/v1/deployments/etl-prod/notifications", headers=admin)).json()
    assert {n["status"] for n in log["items"]} == {"pending"}
    assert all(n["last_error"] for n in log["items"])

    smtp_sink.start()
    clock.advance(600)
    await tick(app, clock)
    assert len(smtp_sink.messages()) == 4
    log = (await client.get("/api/v1/deployments/etl-prod/notifications", headers=admin)).json()
    assert {n["status"] for n in log["items"]} == {"sent"}


@pytest.mark.usefixtures("fleet")
async def test_a_permanently_refused_address_is_recorded_and_others_still_get_theirs(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    await add_recipient(client, admin, "/api/v1/deployments/etl-prod/alert-recipients",
                        "unknown-person@example.com", min_severity="info")  # fmt: skip
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    for _ in range(4):
        await tick(app, clock)
    log = (await client.get("/api/v1/deployments/etl-prod/notifications", headers=admin)).json()
    refused = [n for n in log["items"] if n["email"] == "unknown-person@example.com"]
    assert [n["status"] for n in refused] == ["failed"]
    assert "550" in refused[0]["last_error"]
    assert len(smtp_sink.messages()) == 4


@pytest.mark.usefixtures("fleet")
async def test_a_threshold_override_applies_to_that_deployment_only(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink,
    client: httpx.AsyncClient, admin: dict[str, str],
) -> None:  # fmt: skip
    response = await client.patch(
        "/api/v1/deployments/etl-prod/alert-rules/AirflowSchedulerHeartbeatMissing",
        json={"threshold": "5m"}, headers=admin,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["threshold"] == 300
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    metrics.set(HEARTBEAT, "etl-dev", 120.0, "data-eng")
    for _ in range(4):
        await tick(app, clock)
    assert {to for to, _ in inbox(smtp_sink)} == {"dev@example.com", "team@example.com",
                                                  "infos@example.com"}  # fmt: skip
    assert all("etl-dev" in s for _, s in inbox(smtp_sink))


@pytest.mark.usefixtures("fleet")
@pytest.mark.parametrize(
    ("body", "field"),
    [({"threshold": "soon"}, "threshold"), ({"threshold": -5}, "threshold"),
     ({"threshold": True}, "threshold"), ({"for": "forever"}, "for"),
     ({"severity": "page"}, "severity"), ({"colour": "red"}, "colour")],
)  # fmt: skip
async def test_bad_overrides_are_422_naming_the_field(
    client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, object], field: str
) -> None:
    response = await client.patch(
        "/api/v1/deployments/etl-prod/alert-rules/AirflowSchedulerLagHigh", json=body,
        headers=admin,
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


@pytest.mark.usefixtures("fleet")
async def test_one_delivery_round_keeps_taking_batches_while_they_come_back_full(
    app: FastAPI, clock: FrozenClock, metrics: FakeMetricSource, smtp_sink: SmtpSink
) -> None:
    context = app.state.context
    alerts = context.settings.alerts.model_copy(update={"delivery_batch": 3})
    context.settings = context.settings.model_copy(update={"alerts": alerts})
    metrics.set(HEARTBEAT, "etl-prod", 120.0, "data-eng")
    metrics.set(HEARTBEAT, "etl-dev", 120.0, "data-eng")
    await evaluate_alerts(context)
    # 4 + 3 notifications (etl-prod: 2 own and 2 workspace recipients; etl-dev: 1 and 2) in
    # batches of 3: one round takes three batches, the last one not full.
    await deliver_notifications(context)
    assert len(smtp_sink.messages()) == 7
