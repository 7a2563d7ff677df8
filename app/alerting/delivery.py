"""Delivery: the outbox to SMTP, with claims so that several replicas never send one row twice.

A round claims a batch of due notifications (a claim expires, so a replica that dies mid-batch
releases its rows), composes each e-mail, sends the batch over pooled SMTP sessions, and records
each verdict: sent; retry later with backoff; failed for good (visible in the notification log,
other recipients unaffected); or cancelled, when the recipient was removed meanwhile. While the
batches come back full, the round takes the next one at once instead of waiting for the next
tick.

The crash guarantee — SIGKILL mid-batch re-sends at most the messages in flight, each with its
own Message-ID — fixes one thing: a sending slot may not start its next message before the
verdict of its previous one is committed. What is not fixed is that each verdict needs its own
transaction: verdicts that arrive while a commit is running are committed together in the next
one (group commit), as one conditional UPDATE each, so with N slots a commit serves up to N
messages and no ORM object is loaded to write it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerting import repository
from app.alerting.models import Notification
from app.core.database import session_scope
from app.core.settings import AlertsSettings
from app.integrations.smtp import Delivery, Mailer, Verdict

logger = logging.getLogger(__name__)

# Stop taking new messages this long before the claim expires, so a slow SMTP server never
# lets another replica claim (and send) rows this round is still sending.
CLAIM_MARGIN = 0.2

Composer = Callable[[AsyncSession, Sequence[Notification]], Awaitable[dict[int, EmailMessage]]]


@dataclass
class DeliveryReport:
    batches: int = 0
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0

    def add(self, other: DeliveryReport) -> None:
        """Count another batch's outcomes in this report."""
        self.batches += other.batches
        self.claimed += other.claimed
        self.sent += other.sent
        self.retried += other.retried
        self.failed += other.failed
        self.cancelled += other.cancelled


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    compose: Composer,
    now: datetime,
    settings: AlertsSettings,
    holder: str,
) -> DeliveryReport:
    """Send due notifications, batch after batch while the batches come back full."""
    deliverer = _Deliverer(sessionmaker, mailer, compose, settings, holder)
    report = DeliveryReport()
    started = time.monotonic()
    while True:
        # Each batch's claim runs from when it is taken, not from when the round began.
        batch = await deliverer.batch(now + timedelta(seconds=time.monotonic() - started))
        report.add(batch)
        if batch.claimed < settings.delivery_batch:
            return report
        # Full: more are probably due. Rows this batch left claimed (its deadline came first)
        # are not taken again before their claim lapses, so the loop cannot spin on them.
        if batch.sent + batch.retried + batch.failed + batch.cancelled == 0:
            return report


@dataclass
class _Deliverer:
    sessionmaker: async_sessionmaker[AsyncSession]
    mailer: Mailer
    compose: Composer
    settings: AlertsSettings
    holder: str

    async def batch(self, now: datetime) -> DeliveryReport:
        """Send one batch of due notifications and record what happened to each."""
        settings = self.settings
        report = DeliveryReport(batches=1)
        ttl = timedelta(seconds=settings.claim_ttl)
        deadline = time.monotonic() + settings.claim_ttl * (1 - CLAIM_MARGIN)
        async with session_scope(self.sessionmaker) as session:
            claimed = await repository.claim_due(
                session, self.holder, now, now + ttl, settings.delivery_batch
            )
            report.claimed = len(claimed)
            if not claimed:
                return report
            live, cancelled = await _still_routed(session, claimed, settings)
            for notification in cancelled:
                notification.status, notification.claimed_until = "cancelled", None
            report.cancelled = len(cancelled)
            messages = await self.compose(session, live)
        ordered = [n for n in live if n.id in messages]
        verdicts = _VerdictLog(self.sessionmaker, self.holder, now, settings)
        slots = asyncio.Semaphore(self.mailer.concurrency)

        async def deliver(notification: Notification) -> Delivery | None:
            # The slot is held until the verdict is committed: see the module's docstring.
            async with slots:
                if time.monotonic() >= deadline:
                    # Left claimed; the claim lapses and the next round takes it.
                    return None
                delivery = await self.mailer.send(messages[notification.id])
                return delivery if await verdicts.record(notification, delivery) else None

        for verdict in await asyncio.gather(*(deliver(n) for n in ordered)):
            if verdict is not None:
                report.sent += verdict.verdict is Verdict.SENT
                report.retried += verdict.verdict is Verdict.RETRY
                report.failed += verdict.verdict is Verdict.FAILED
        return report


class _VerdictLog:
    """Commits verdicts in groups: those that arrive while a commit runs share the next one."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        holder: str,
        now: datetime,
        settings: AlertsSettings,
    ) -> None:
        self.sessionmaker, self.holder = sessionmaker, holder
        self.now, self.settings = now, settings
        self.waiting: list[tuple[Notification, Delivery, asyncio.Future[bool]]] = []
        self.committing = asyncio.Lock()

    async def record(self, notification: Notification, delivery: Delivery) -> bool:
        """Commit this verdict (with whatever else is waiting); False if the claim was lost."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting.append((notification, delivery, done))
        async with self.committing:
            if not done.done():
                group, self.waiting = self.waiting, []
                try:
                    async with session_scope(self.sessionmaker) as session:
                        written = [
                            await repository.record_verdict(
                                session, row.id, self.holder, _verdict(row, verdict, self.now,
                                                                       self.settings),
                            )
                            for row, verdict, _ in group
                        ]  # fmt: skip
                except BaseException as exc:
                    for _, _, waiter in group:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    raise
                for (_, _, waiter), ok in zip(group, written, strict=True):
                    waiter.set_result(ok)
        return done.result()


def _verdict(
    row: Notification, delivery: Delivery, now: datetime, settings: AlertsSettings
) -> dict[str, object]:
    """The columns a verdict sets; the claim is released with it."""
    attempts = row.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "claimed_by": None, "claimed_until": None}
    if delivery.verdict is Verdict.SENT:
        values.update(status="sent", sent_at=now, last_error=None)
    elif delivery.verdict is Verdict.FAILED:
        values.update(status="failed", last_error=delivery.detail)
    else:
        steps = settings.delivery_backoff
        values.update(
            last_error=delivery.detail,
            next_attempt_at=now + timedelta(seconds=steps[min(attempts, len(steps)) - 1]),
        )
    return values


async def _still_routed(
    session: AsyncSession, claimed: Sequence[Notification], settings: AlertsSettings
) -> tuple[list[Notification], list[Notification]]:
    """Split claimed rows into those to send and those whose recipient is gone."""
    system = {address.lower() for address in settings.system_recipients}
    recipients = await repository.recipients_by_id(
        session, {n.recipient_id for n in claimed if n.recipient_id is not None}
    )
    live: list[Notification] = []
    gone: list[Notification] = []
    for notification in claimed:
        if notification.recipient_id is None:
            # System recipients are configuration; a recipient row removed sets the id to NULL.
            (live if notification.email in system else gone).append(notification)
            continue
        recipient = recipients.get(notification.recipient_id)
        (live if recipient is not None and recipient.email == notification.email else gone).append(
            notification
        )
    return live, gone
