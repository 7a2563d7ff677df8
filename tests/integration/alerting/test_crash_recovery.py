"""Sextant killed with SIGKILL in the middle of a delivery batch loses no e-mail.

A real `sextant serve` on PostgreSQL fires one alert to RECIPIENTS addresses and delivers them
in one batch, one message at a time (delivery concurrency 1), to a real SMTP server that takes
SMTP_DELAY to accept each message. When the server holds some but not all of them, the process
is killed with SIGKILL and started again. Then every address gets its e-mail; at most the one
message in flight at the kill arrives twice, with the same Message-ID both times.

The dead process's claim on the rows it had not sent yet must expire (SEXTANT_ALERTS_CLAIM_TTL,
set short here) before the new process — another instance id — may take them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.components import (
    ComponentDirs,
    PostgresServer,
    PrometheusServer,
    StatsdExporter,
)
from tests.harness.plugin import ComponentFactory, start_component
from tests.harness.smtp import SmtpSink, start_smtp_sink
from tests.integration.alerting._sextant import (
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
RECIPIENTS = [f"oncall{i:02d}@example.com" for i in range(30)]
SMTP_DELAY = 0.25
# Kill when the sink holds this many messages: well inside the batch of 30.
KILL_AT = 10
CLAIM_TTL = 10.0


@pytest.fixture
def slow_smtp_sink(component_dirs: ComponentDirs) -> Iterator[SmtpSink]:
    """A real aiosmtpd server that takes SMTP_DELAY seconds to accept each message."""
    sink = start_component(lambda: start_smtp_sink(component_dirs, delay=SMTP_DELAY))
    yield sink
    sink.stop()


@pytest.fixture
def sextant_factory(
    component_dirs: ComponentDirs,
) -> Iterator[ComponentFactory[..., SextantServer]]:
    """Starts `sextant serve` processes: call with (env, name); all stopped after the test."""
    factory = ComponentFactory(start_sextant, component_dirs)
    yield factory
    factory.stop_all()


def outbox(postgres: PostgresServer, database: str) -> collections.Counter[str]:
    """How many outbox rows are in each status."""
    text = postgres.psql("SELECT status, count(*) FROM notifications GROUP BY status", database)
    return collections.Counter(
        {status: int(count) for status, count in (line.split("|") for line in text.splitlines())}
    )


def test_sigkill_mid_batch_loses_nothing_and_resends_at_most_the_one_in_flight(
    postgres_server: PostgresServer,
    statsd_exporter: StatsdExporter,
    prometheus_factory: Callable[..., PrometheusServer],
    slow_smtp_sink: SmtpSink,
    sextant_factory: ComponentFactory[..., SextantServer],
    tmp_path: Path,
) -> None:
    """Kill -9 with 10 of 30 e-mails sent; after a restart all 30 arrive, at most one twice."""
    sink = slow_smtp_sink
    database = prepare_database(postgres_server, "sextant_crash", tmp_path)
    prometheus = stalled_heartbeat(
        statsd_exporter, lambda config: prometheus_factory(config=config), tmp_path,
        WORKSPACE, DEPLOYMENT,
    )  # fmt: skip
    env = sextant_env(
        database.url,
        PROMETHEUS_URL=prometheus.url,
        SMTP_HOST=sink.host,
        SMTP_PORT=sink.port,
        SMTP_FROM="sextant@example.com",
        ALERTS_INTERVAL=1,
        ALERTS_CLAIM_TTL=CLAIM_TTL,
        ALERTS_DELIVERY_INTERVAL=0.5,
        ALERTS_DELIVERY_CONCURRENCY=1,
        ALERTS_DELIVERY_BATCH=100,
    )
    sextant = sextant_factory(env, "sextant")
    with api(sextant, admin_token(env, tmp_path)) as client:
        register(client, WORKSPACE, DEPLOYMENT, RECIPIENTS)
        lower_heartbeat_threshold(client, DEPLOYMENT, 5)

    wait_until(
        lambda: len(sink.messages()) >= KILL_AT, 60, f"{KILL_AT} e-mails delivered", interval=0.02
    )
    sextant.kill()
    at_kill = len(sink.messages())
    assert 0 < at_kill < len(RECIPIENTS), "the kill did not land in the middle of the batch"
    # The outbox knows what was sent before the kill: every message the server acknowledged,
    # except perhaps the last one, whose acknowledgement the process died before recording.
    before = outbox(postgres_server, database.name)
    assert before["sent"] >= at_kill - 1, before
    assert before["sent"] + before["pending"] == len(RECIPIENTS), before

    sextant.start()
    # The unsent rows stay claimed by the dead process until their claim expires.
    wait_until(
        lambda: outbox(postgres_server, database.name)["sent"] == len(RECIPIENTS),
        CLAIM_TTL + 60,
        "every notification sent after the restart",
        interval=0.5,
    )

    messages = sink.messages()
    received = per_recipient(messages)
    assert set(received) == set(RECIPIENTS)
    twice = {address: count for address, count in received.items() if count > 1}
    assert sum(count - 1 for count in twice.values()) <= 1, twice
    message_ids: dict[str, set[str]] = collections.defaultdict(set)
    for message in messages:
        message_ids[str(message["X-Envelope-To"])].add(str(message["Message-ID"]))
    assert all(len(ids) == 1 for ids in message_ids.values()), {
        address: ids for address, ids in message_ids.items() if len(ids) > 1
    }
    assert outbox(postgres_server, database.name) == {"sent": len(RECIPIENTS)}
