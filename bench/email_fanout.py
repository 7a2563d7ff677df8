"""E-mail fan-out benchmark: 1,000 alert e-mails into a real SMTP server (aiosmtpd), Sextant's
pooled delivery against one SMTP session per message (Alertmanager's way), same run.

Why: Alertmanager's e-mail notifier dials a new SMTP session for every notification (connect,
greeting, EHLO, MAIL, RCPT, DATA, QUIT; `notify/email/email.go`). Sextant's Mailer keeps a few
sessions open and sends many messages on each, `delivery_concurrency` (4) at a time, and its
delivery job sends straight from the outbox, recording each verdict as it comes. The issue's
target: >= 5x faster than one session per message, with zero losses and zero duplicates.

How: the SMTP sink is the test harness's (tests/harness/smtp_sink.py: aiosmtpd in its own
process, one file per accepted message and a line per EHLO, so sessions can be counted). The
outbox is filled the way production fills it: 100 deployments in 10 workspaces, each with 5
deployment recipients and 5 workspace recipients, a stalled scheduler in each (a metric source
that answers the rule's measure with 120 s: `tests/fakes/metrics.py`, which also gives the
chart's hour of points), the real `evaluate_alerts` job without its immediate delivery (twice:
pending, then firing after the rule's `for`, if it has one): 100 alerts x 10 recipients =
1,000 notifications, each a multipart e-mail with its PNG chart (about 7 KB). Then, one after
the other, each checked against the sink (1,000 files, 1,000 distinct Message-IDs, exactly the
outbox's):

    Sextant, full path   the real `deliver_notifications` job until the outbox is empty (it takes
                         batches of `delivery_batch` = 200 while they come back full): claim,
                         check recipients, compose each event once (chart included) and address
                         it per recipient, send, group-commit the verdicts; SQLite by default
                         (the embedded database, durable commits), `--database postgres` for the
                         harness' PostgreSQL (fsync off, as in the tests)
    Sextant, Mailer      `Mailer.send_many` with the default concurrency (4), the same 1,000
                         messages already composed: delivery alone
    Mailer, 1 session    the same with concurrency 1 (reuse alone, no parallelism)
    per message, seq.    a new aiosmtplib session per message, one at a time: what one
                         Alertmanager notifier does per notification
    per message, 4       the same, 4 at a time: Sextant's concurrency, so that only session
                         reuse differs -- the fair comparison (Alertmanager flushes aggregation
                         groups concurrently, so its effective concurrency is not 1 either)
    smtplib, seq.        stdlib smtplib, a session per message, one at a time (reference)
    ceiling              a minimal SMTP client on raw sockets, 4 kept-open sessions, messages
                         serialized beforehand: what the sink itself can take

Each phase runs `--repeat` times (the outbox is reset to pending between full-path runs); the
table shows the median. PASS/FAIL: Sextant (full path and Mailer) against one session per
message, at the same concurrency and sequentially, and zero losses and duplicates everywhere.

Run: `uv run python -m bench.email_fanout [--repeat 3] [--database sqlite|postgres]`
(about 1-2 minutes; everything on 127.0.0.1; the sink, and PostgreSQL if used, are stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import aiosmtplib
from sqlalchemy import select, update

from app.alerting.delivery import deliver_due
from app.alerting.dependencies import MAILER, METRIC_SOURCE, mailer_of, metric_source_of
from app.alerting.models import Notification
from app.alerting.service import alerting
from app.core.clock import FrozenClock
from app.core.context import AppContext
from app.core.database import session_scope
from app.core.migrations import upgrade
from app.core.settings import (
    AlertsSettings,
    DatabaseSettings,
    SchedulerSettings,
    Settings,
    SmtpSettings,
)
from app.integrations.smtp import Mailer, Verdict
from app.jobs.scheduler import deliver_notifications, evaluate_alerts
from app.main import create_app
from app.models import load_all_models
from app.observability.rules import catalogue
from bench._alerting_common import load_average, mailbox, median, seed_fleet, table, verdict
from tests.fakes.metrics import FakeMetricSource
from tests.harness.components import ComponentDirs, PostgresServer, start_postgres
from tests.harness.smtp import SmtpSink, start_smtp_sink

TARGET = 5.0
RULE = "AirflowSchedulerHeartbeatMissing"
SENDER = "sextant@example.com"


@dataclass
class Phase:
    name: str
    seconds: list[float] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    unique: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def clean(self) -> bool:
        """Every run: every message once, none missing, none refused."""
        return all(
            r == u and m == 0 and f == 0
            for r, u, m, f in zip(self.received, self.unique, self.missing, self.refused,
                                  strict=True)
        )  # fmt: skip


# --- the baselines -----------------------------------------------------------------------------


async def one_session_per_message(
    address: tuple[str, int], messages: Sequence[EmailMessage], concurrency: int
) -> int:
    """Connect, EHLO, send, QUIT for every message, `concurrency` at a time; returns refusals."""
    slots = asyncio.Semaphore(concurrency)
    refused = 0

    async def send(message: EmailMessage) -> None:
        nonlocal refused
        async with slots:
            client = aiosmtplib.SMTP(hostname=address[0], port=address[1], start_tls=False)
            await client.connect()
            try:
                errors, _ = await client.send_message(message)
                refused += len(errors)
            finally:
                await client.quit()

    await asyncio.gather(*(send(m) for m in messages))
    return refused


def smtplib_sequential(address: tuple[str, int], messages: Sequence[EmailMessage]) -> int:
    """The standard library, a session per message, one at a time; returns refusals."""
    refused = 0
    for message in messages:
        with smtplib.SMTP(*address) as client:
            refused += len(client.send_message(message))
    return refused


def serialized(messages: Sequence[EmailMessage]) -> list[tuple[str, bytes]]:
    """(recipient, DATA payload) of each message, for the raw client (not timed)."""
    return [(str(m["To"]), _dot_stuffed(m.as_bytes(policy=SMTP_POLICY))) for m in messages]


async def raw_ceiling(
    address: tuple[str, int], payloads: Sequence[tuple[str, bytes]], sessions: int
) -> int:
    """The sink's own limit: pre-serialized messages over `sessions` kept-open raw sessions."""
    shares = [list(payloads[i::sessions]) for i in range(sessions)]
    refused = 0

    async def session(share: list[tuple[str, bytes]]) -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection(*address)
        await _reply(reader)
        writer.write(b"EHLO ceiling\r\n")
        await _reply(reader)
        for to, data in share:
            for command in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{to}>", "DATA"):
                writer.write(command.encode() + b"\r\n")
                await _reply(reader)
            writer.write(data + b".\r\n")
            if not (await _reply(reader)).startswith(b"250"):
                refused += 1
        writer.write(b"QUIT\r\n")
        await _reply(reader)
        writer.close()

    await asyncio.gather(*(session(share) for share in shares))
    return refused


def _dot_stuffed(data: bytes) -> bytes:
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data.replace(b"\r\n.", b"\r\n..")


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) SMTP reply; its last line."""
    while True:
        line = await reader.readline()
        if len(line) < 4 or line[3:4] != b"-":
            return line


class DelayProxy:
    """A TCP relay on 127.0.0.1 that delivers every chunk `rtt / 2` after it was read, both ways.

    Stands in for the distance to a real mail relay (loopback has none): each SMTP command
    and reply costs one round trip, and a new connection one more (the TCP handshake), without
    delaying chunks behind one another.
    """

    def __init__(self, host: str, port: int, rtt: float) -> None:
        self.target = (host, port)
        self.one_way = rtt / 2
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2 * self.one_way)  # the TCP handshake's round trip
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pump(reader, upstream_writer),
                             self._pump(upstream_reader, writer))  # fmt: skip

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                chunks.put_nowait((loop.time() + self.one_way, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()


# --- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    load_all_models()
    dirs = ComponentDirs.create()
    sink: SmtpSink | None = None
    postgres: PostgresServer | None = None
    proxy: DelayProxy | None = None
    started_all = time.monotonic()
    try:
        sink = await asyncio.to_thread(start_smtp_sink, dirs)
        address = (sink.host, sink.port)
        if args.rtt_ms > 0:
            proxy = DelayProxy(sink.host, sink.port, args.rtt_ms / 1000)
            await proxy.start()
            address = ("127.0.0.1", proxy.port)
        with tempfile.TemporaryDirectory() as scratch:
            if args.database == "postgres":
                postgres = await asyncio.to_thread(start_postgres, dirs)
                url = await asyncio.to_thread(postgres.create_database, "fanout")
                database = "PostgreSQL 15 (test harness: fsync off)"
            else:
                url = f"sqlite:///{Path(scratch) / 'fanout.db'}"
                database = "SQLite (WAL, synchronous=FULL: Sextant's embedded default)"
            await asyncio.to_thread(upgrade, url)
            settings = Settings(
                _env_file=None,
                database=DatabaseSettings(url=url),
                scheduler=SchedulerSettings(enabled=False),
                smtp=SmtpSettings(host=address[0], port=address[1], sender=SENDER),
                alerts=AlertsSettings(),
            )
            clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
            app = create_app(settings, clock, targets=[])
            async with app.router.lifespan_context(app):
                context: AppContext = app.state.context
                return await _measure(args, context, clock, sink, address, database,
                                      started_all)  # fmt: skip
    finally:
        if proxy is not None:
            await proxy.stop()
        for component in (sink, postgres):
            if component is not None:
                component.stop()
        dirs.remove()


async def _fill_outbox(
    context: AppContext, clock: FrozenClock, args: argparse.Namespace
) -> list[Notification]:
    fleet = [(f"team-{i // args.per_workspace:02d}", f"dep-{i:03d}") for i in range(args.alerts)]
    await seed_fleet(context.sessionmaker, fleet, deployment_recipients=5,
                     workspace_recipients=5)  # fmt: skip
    source = FakeMetricSource()
    for workspace, deployment in fleet:
        source.set(RULE, deployment, 120.0, workspace)
    context.extras[METRIC_SOURCE] = source
    # The job sends what a round queued at once; the outbox must stay full here, so the
    # evaluation runs without the job's delivery.
    mailer = context.extras.pop(MAILER)
    try:
        await evaluate_alerts(context)  # firing (`for: 0s`) or pending
        clock.advance(catalogue().get(RULE).for_.total_seconds())
        await evaluate_alerts(context)  # firing by now: the outbox is written
    finally:
        context.extras[MAILER] = mailer
    async with session_scope(context.sessionmaker) as session:
        return list((await session.scalars(select(Notification).order_by(Notification.id))).all())


async def _reset_outbox(context: AppContext) -> None:
    async with session_scope(context.sessionmaker) as session:
        await session.execute(
            update(Notification).values(
                status="pending", attempts=0, sent_at=None, claimed_by=None, claimed_until=None,
                last_error=None, next_attempt_at=context.clock.now(),
            )
        )  # fmt: skip


async def _measure(
    args: argparse.Namespace,
    context: AppContext,
    clock: FrozenClock,
    sink: SmtpSink,
    address: tuple[str, int],
    database: str,
    started_all: float,
) -> int:
    outbox = await _fill_outbox(context, clock, args)
    expected = {n.message_id for n in outbox}
    started = time.perf_counter()
    async with session_scope(context.sessionmaker) as session:
        composed = await alerting.compose_all(
            session, outbox, catalogue(), context.settings, metric_source_of(context)
        )
    composing = time.perf_counter() - started
    messages = [composed[n.id] for n in outbox]
    payloads = serialized(messages)
    size = sum(len(m.as_bytes()) for m in messages) / len(messages)
    mailer = mailer_of(context)
    assert mailer is not None
    concurrency = mailer.concurrency
    alerts_settings = context.settings.alerts
    where = f"through a relay adding {args.rtt_ms:g} ms of round trip" if args.rtt_ms else "direct"
    print(
        f"email_fanout: {len(outbox)} notifications ({args.alerts} firing alerts x "
        f"{len(outbox) // args.alerts} recipients), {size / 1024:.1f} KB each on average (text, "
        f"HTML, PNG chart); real aiosmtpd sink on 127.0.0.1 ({where}); Sextant on {database}; "
        f"delivery_concurrency {concurrency}, delivery_batch {alerts_settings.delivery_batch}; "
        f"load average {load_average()}",
        flush=True,
    )
    full_rounds: list[int] = []

    async def outbox_rounds(deliver: Callable[[], Awaitable[object]]) -> int:
        """Delivery rounds back to back until nothing is pending; returns rows not sent."""
        await _reset_outbox(context)
        rounds = 0
        while True:
            async with session_scope(context.sessionmaker) as session:
                left = await session.scalar(
                    select(Notification.id).where(Notification.status == "pending").limit(1)
                )
            if left is None:
                break
            rounds += 1
            await deliver()
        full_rounds.append(rounds)
        async with session_scope(context.sessionmaker) as session:
            statuses = (await session.scalars(select(Notification.status))).all()
        return sum(status != "sent" for status in statuses)

    async def precomposed(session: object, due: Sequence[Notification]) -> dict[int, EmailMessage]:
        return {n.id: composed[n.id] for n in due}

    async def mailer_with(concurrency: int) -> int:
        pooled = Mailer(context.settings.smtp, concurrency=concurrency)
        try:
            deliveries = await pooled.send_many(messages)
        finally:
            await pooled.close()
        return sum(d.verdict is not Verdict.SENT for d in deliveries)

    full = Phase("Sextant, full path: deliver_notifications job")
    outbox_only = Phase("Sextant, outbox delivery only (deliver_due, pre-composed)")
    pooled = Phase(f"Sextant Mailer.send_many, concurrency {concurrency}")
    per_seq = Phase("one session per message, sequential")
    per_same = Phase(f"one session per message, {concurrency} at a time")
    ceiling = Phase(f"ceiling: raw SMTP client, {concurrency} kept-open sessions")
    phases: list[tuple[Phase, Callable[[], Awaitable[int]]]] = [
        (full, lambda: outbox_rounds(lambda: deliver_notifications(context))),
        (outbox_only, lambda: outbox_rounds(lambda: deliver_due(
            context.sessionmaker, mailer, precomposed, context.clock.now(), alerts_settings,
            context.instance_id))),
        (pooled, lambda: mailer_with(concurrency)),
        (Phase("Sextant Mailer.send_many, concurrency 1"), lambda: mailer_with(1)),
        (per_seq, lambda: one_session_per_message(address, messages, 1)),
        (per_same, lambda: one_session_per_message(address, messages, concurrency)),
        (Phase("stdlib smtplib, one session per message, sequential"),
         lambda: asyncio.to_thread(smtplib_sequential, address, messages)),
        (ceiling, lambda: raw_ceiling(address, payloads, concurrency)),
    ]  # fmt: skip
    for _ in range(args.repeat):
        for phase, action in phases:
            sink.clear()
            sessions = sink.sessions()
            started = time.perf_counter()
            refused = await action()
            phase.seconds.append(time.perf_counter() - started)
            received = mailbox(sink.maildir)
            ids = [r.message_id for r in received]
            phase.sessions.append(sink.sessions() - sessions)
            phase.received.append(len(received))
            phase.unique.append(len(set(ids)))
            phase.missing.append(len(expected - set(ids)))
            phase.refused.append(refused)
    sink.clear()

    seq_time, same_time = median(per_seq.seconds), median(per_same.seconds)
    rows: list[list[object]] = []
    for phase, _ in phases:
        seconds = median(phase.seconds)
        duplicates = max(r - u for r, u in zip(phase.received, phase.unique, strict=True))
        per_run = "/".join(str(count) for count in phase.sessions)
        rows.append([phase.name, seconds, len(outbox) / seconds, per_run,
                     f"{min(phase.received)}/{len(outbox)}", duplicates,
                     seq_time / seconds, same_time / seconds])  # fmt: skip
    print(f"\nMedian of {args.repeat} runs each (SMTP sessions: per run; the job's Mailer keeps "
          f"its sessions open from one run to the next); speed-up = the per-message baseline's "
          f"time / this row's time")  # fmt: skip
    print(table(["method", "seconds", "msg/s", "SMTP sessions", "received", "duplicates",
                 "vs per-message seq.", f"vs per-message {concurrency}"], rows))  # fmt: skip
    full_time, pooled_time = median(full.seconds), median(pooled.seconds)
    rounds = median(full_rounds)
    interval = alerts_settings.delivery_interval
    print(f"  composing the 1,000 e-mails (compose_all, charts included): {composing:.2f} s")
    print(f"  the outbox took {rounds:.0f} delivery rounds of up to "
          f"{alerts_settings.delivery_batch}; run by the scheduler every {interval:g} s, the "
          f"last would start >= {(rounds - 1) * interval:.0f} s after the first")  # fmt: skip
    print(
        f"  rate against the ceiling (the sink's own limit): Mailer "
        f"{median(ceiling.seconds) / pooled_time:.2f}x, full path "
        f"{median(ceiling.seconds) / full_time:.2f}x; ceiling against one session per "
        f"message, {concurrency} at a time: {same_time / median(ceiling.seconds):.2f}x"
    )

    clean = all(phase.clean for phase, _ in phases)
    print("\nTargets (>= 5x; fair baseline: the same concurrency, only session reuse differs)")
    for name, seconds in (("full path", full_time), ("Mailer", pooled_time)):
        for label, baseline in ((f"{concurrency} at a time", same_time), ("sequential", seq_time)):
            ratio = baseline / seconds
            print(f"  Sextant {name} vs one session per message, {label}: {ratio:.2f}x "
                  f"{verdict(ratio >= TARGET)}")  # fmt: skip
    print(f"  zero losses and zero duplicates in every run of every method: {verdict(clean)}")
    print(f"  run time {time.monotonic() - started_all:.0f} s; load average {load_average()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=100, help="firing alerts (x10 recipients)")
    parser.add_argument("--per-workspace", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--rtt-ms", type=float, default=0.0,
        help="put a relay adding this round-trip time between every client and the sink",
    )  # fmt: skip
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
