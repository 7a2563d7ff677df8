"""Several Sextant replicas on one PostgreSQL: every alert is evaluated and e-mailed once.

The first test runs two real `sextant serve` processes: both run every periodic job (evaluation
each second, delivery every half second) against the same database, Prometheus and SMTP server.
The evaluator lease and the outbox claims are all that keeps them from doubling the work; the
test checks the result from the outside: each recipient's mailbox, the outbox, the alert
history, and both replicas' /readyz.

Two processes only race when their rounds happen to coincide, a few milliseconds in every half
second, so that test shows the outcome but cannot force the race. The other two force it: many
claimers (each with its own connection pool, as replicas have) take the outbox and the evaluator
lease at the same instant on the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerting import repository
from app.alerting.models import Alert, AlertEvent, Notification
from app.core import leases
from app.core.database import create_engine, create_sessionmaker, session_scope
from app.core.settings import DatabaseSettings
from tests.harness.components import (
    ComponentDirs,
    PostgresServer,
    PrometheusServer,
    StatsdExporter,
)
from tests.harness.plugin import ComponentFactory
from tests.harness.smtp import SmtpSink
from tests.integration.alerting._sextant import (
    HEARTBEAT_RULE,
    SextantServer,
    admin_token,
    api,
    lower_heartbeat_threshold,
    per_recipient,
    prepare_database,
    register,
    sextant_env,
    stalled_heartbeat,
    start_sextant,
    wait_until,
)

WORKSPACE = "data-eng"
DEPLOYMENT = "etl-prod"
DEPLOYMENT_RECIPIENTS = [f"oncall{i}@example.com" for i in range(5)]
WORKSPACE_RECIPIENTS = ["team@example.com"]
RECIPIENTS = sorted(DEPLOYMENT_RECIPIENTS + WORKSPACE_RECIPIENTS)


@pytest.fixture
def sextant_factory(
    component_dirs: ComponentDirs,
) -> Iterator[ComponentFactory[..., SextantServer]]:
    """Starts `sextant serve` processes: call with (env, name); all stopped after the test."""
    factory = ComponentFactory(start_sextant, component_dirs)
    yield factory
    factory.stop_all()


def test_two_replicas_email_each_recipient_once(
    postgres_server: PostgresServer,
    statsd_exporter: StatsdExporter,
    prometheus_factory: Callable[..., PrometheusServer],
    smtp_sink: SmtpSink,
    sextant_factory: ComponentFactory[..., SextantServer],
    tmp_path: Path,
) -> None:
    """A stalled scheduler seen by two replicas: one FIRING e-mail per recipient, no more."""
    database = prepare_database(postgres_server, "sextant_replicas", tmp_path)
    prometheus = stalled_heartbeat(
        statsd_exporter, lambda config: prometheus_factory(config=config), tmp_path,
        WORKSPACE, DEPLOYMENT,
    )  # fmt: skip
    env = sextant_env(
        database.url,
        PROMETHEUS_URL=prometheus.url,
        SMTP_HOST=smtp_sink.host,
        SMTP_PORT=smtp_sink.port,
        SMTP_FROM="sextant@example.com",
        ALERTS_INTERVAL=1,
        ALERTS_DELIVERY_INTERVAL=0.5,
    )
    replicas = [sextant_factory(env, "sextant-a"), sextant_factory(env, "sextant-b")]
    first, second = replicas
    token = admin_token(env, tmp_path)
    with api(first, token) as client:
        register(client, WORKSPACE, DEPLOYMENT, DEPLOYMENT_RECIPIENTS, WORKSPACE_RECIPIENTS)
        # The catalogue's 60 s would make this test slow; the measure of a never-rising
        # counter only grows, so 5 s fires once and for good.
        lower_heartbeat_threshold(client, DEPLOYMENT, 5)

    not_ready: list[str] = []

    def readiness_of_both() -> None:
        for replica in replicas:
            assert replica.process.running, f"{replica.process.name} exited"
            status, body = replica.readiness()
            if status != 200:
                not_ready.append(f"{replica.process.name}: {body}")

    def everyone_mailed() -> bool:
        readiness_of_both()
        return set(per_recipient(smtp_sink.messages())) >= set(RECIPIENTS)

    wait_until(everyone_mailed, 60, "every recipient got the FIRING e-mail", interval=0.2)

    # Absence of a duplicate needs a window: make it one of work done, not of time slept. Both
    # replicas run several more delivery rounds, and the evaluator several more rounds (the
    # alert keeps firing), after the last e-mail arrived.
    delivery_rounds = [replica.job_runs("delivery") for replica in replicas]
    with api(second, token) as client:

        def evaluated_at() -> str:
            alerts = client.get(f"/api/v1/deployments/{DEPLOYMENT}/alerts").json()
            return str(alerts[0]["last_evaluated_at"])

        seen = evaluated_at()
        evaluations: list[str] = []

        def more_rounds_done() -> bool:
            readiness_of_both()
            now = evaluated_at()
            if now != seen and now not in evaluations:
                evaluations.append(now)
            return len(evaluations) >= 3 and all(
                replica.job_runs("delivery") >= done + 4
                for replica, done in zip(replicas, delivery_rounds, strict=True)
            )

        wait_until(more_rounds_done, 30, "three evaluations and four deliveries per replica")

        alerts = client.get(f"/api/v1/deployments/{DEPLOYMENT}/alerts").json()
        outbox = client.get(f"/api/v1/deployments/{DEPLOYMENT}/notifications").json()

    messages = smtp_sink.messages()
    assert per_recipient(messages) == dict.fromkeys(RECIPIENTS, 1)
    # One event, so one subject (its value is the one measured when the alert fired).
    (subject,) = {str(m["Subject"]) for m in messages}
    assert re.fullmatch(rf"\[FIRING\] Scheduler heartbeat missing \d+ s — {DEPLOYMENT}", subject)
    assert len({str(m["Message-ID"]) for m in messages}) == len(RECIPIENTS)

    assert [(a["rule"], a["status"]) for a in alerts] == [(HEARTBEAT_RULE, "firing")]
    rows = sorted((n["email"], n["kind"], n["status"], n["attempts"]) for n in outbox["items"])
    assert rows == [(address, "firing", "sent", 1) for address in RECIPIENTS]
    # One transition recorded, by one evaluator; and nothing else in the whole outbox.
    assert (
        postgres_server.psql("SELECT kind, count(*) FROM alert_events GROUP BY kind", database.name)
        == "firing|1"
    )
    assert postgres_server.psql("SELECT count(*) FROM notifications", database.name) == str(
        len(RECIPIENTS)
    )
    assert not_ready == [], "a replica was not ready while the alert fired"


RACERS = 8


@pytest.fixture
async def racers(
    postgres_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    """Session factories of RACERS would-be replicas, each with its own pool, on one database."""
    database = prepare_database(postgres_server, "sextant_racers", tmp_path)
    engines = [create_engine(DatabaseSettings(url=database.url)) for _ in range(RACERS)]
    yield [create_sessionmaker(engine) for engine in engines]
    for engine in engines:
        await engine.dispose()


async def test_racing_claimers_take_each_notification_once(
    racers: list[async_sessionmaker[AsyncSession]],
) -> None:
    """Claimers started together split the outbox between them: no row twice, none left."""
    now = datetime.now(UTC)
    total = 400
    async with session_scope(racers[0]) as session:
        alert = Alert(rule="SextantMonitoringUnavailable", status="firing", severity="critical")
        session.add(alert)
        await session.flush()
        event = AlertEvent(alert_id=alert.id, rule=alert.rule, kind="firing", at=now,
                           episode=now, severity="critical")  # fmt: skip
        session.add(event)
        await session.flush()
        session.add_all(
            Notification(
                event_id=event.id,
                alert_id=alert.id,
                email=f"r{i}@example.com",
                kind="firing",
                episode=now,
                status="pending",
                next_attempt_at=now,
                message_id=f"<r{i}@sextant.test>",
            )
            for i in range(total)
        )
    start = asyncio.Event()

    async def claimer(index: int) -> list[int]:
        holder = f"replica-{index}"
        taken: list[int] = []
        await start.wait()
        while True:
            async with session_scope(racers[index]) as session:
                rows = await repository.claim_due(
                    session, holder, now, now + timedelta(minutes=2), limit=9
                )
            if not rows:
                return taken
            assert {row.claimed_by for row in rows} == {holder}
            taken += [row.id for row in rows]

    tasks = [asyncio.create_task(claimer(i)) for i in range(RACERS)]
    start.set()
    claims = await asyncio.gather(*tasks)

    every = [row_id for taken in claims for row_id in taken]
    assert len(every) == len(set(every)) == total
    assert sum(1 for taken in claims if taken) > 1, "the claimers did not overlap"


async def test_racing_replicas_hold_the_evaluator_lease_one_at_a_time(
    racers: list[async_sessionmaker[AsyncSession]],
) -> None:
    """Replicas that ask for a lease at once: one gets it, whether new, held, or expired."""
    now = datetime.now(UTC)
    ttl = timedelta(seconds=30)

    async def race(at: datetime) -> list[str]:
        async def take(index: int) -> str | None:
            async with session_scope(racers[index]) as session:
                won = await leases.acquire(session, "alert-evaluator", f"replica-{index}", at, ttl)
            return f"replica-{index}" if won else None

        return [h for h in await asyncio.gather(*(take(i) for i in range(RACERS))) if h]

    first = await race(now)  # the lease does not exist yet: an INSERT race
    assert len(first) == 1
    assert await race(now + timedelta(seconds=10)) == first  # held: only its holder renews it
    expired = await race(now + timedelta(seconds=45))  # expired: an UPDATE race
    assert len(expired) == 1
