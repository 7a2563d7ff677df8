"""Delivery: the outbox to SMTP, with claims so that several replicas never send one row twice.

A round claims a batch of due notifications (a claim expires, so a replica that dies mid-batch
releases its rows), composes each e-mail, sends the batch over pooled SMTP sessions, and records
each verdict as soon as the server gave it: sent; retry later with backoff; failed for good
(visible in the notification log, other recipients unaffected); or cancelled, when the recipient
was removed meanwhile.
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
from app.recipients.models import AlertRecipient

logger = logging.getLogger(__name__)

# Stop taking new messages this long before the claim expires, so a slow SMTP server never
# lets another replica claim (and send) rows this round is still sending.
CLAIM_MARGIN = 0.2

Composer = Callable[[AsyncSession, Sequence[Notification]], Awaitable[dict[int, EmailMessage]]]


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    compose: Composer,
    now: datetime,
    settings: AlertsSettings,
    holder: str,
) -> DeliveryReport:
    """Send one batch of due notifications and record what happened to each."""
    report = DeliveryReport()
    ttl = timedelta(seconds=settings.claim_ttl)
    deadline = time.monotonic() + settings.claim_ttl * (1 - CLAIM_MARGIN)
    async with session_scope(sessionmaker) as session:
        claimed = await repository.claim_due(
            session, holder, now, now + ttl, settings.delivery_batch
        )
        report.claimed = len(claimed)
        if not claimed:
            return report
        live, cancelled = await _still_routed(session, claimed, settings)
        for notification in cancelled:
            notification.status, notification.claimed_until = "cancelled", None
        report.cancelled = len(cancelled)
        messages = await compose(session, live)
    ordered = [n for n in live if n.id in messages]
    # Each verdict is committed as soon as it is known, before the slot takes another message:
    # a crash mid-batch re-sends only the messages in flight (at most `concurrency`), never
    # those already accepted.
    slots = asyncio.Semaphore(mailer.concurrency)

    async def deliver(notification: Notification) -> Delivery | None:
        async with slots:
            if time.monotonic() >= deadline:
                # Left claimed; the claim lapses and the next round takes it.
                return None
            delivery = await mailer.send(messages[notification.id])
            async with session_scope(sessionmaker) as session:
                row = await session.get(Notification, notification.id)
                if row is None or row.claimed_by != holder:
                    return None
                _record(row, delivery, now, settings)
            return delivery

    for verdict in await asyncio.gather(*(deliver(n) for n in ordered)):
        if verdict is not None:
            report.sent += verdict.verdict is Verdict.SENT
            report.retried += verdict.verdict is Verdict.RETRY
            report.failed += verdict.verdict is Verdict.FAILED
    return report


def _record(row: Notification, delivery: Delivery, now: datetime, settings: AlertsSettings) -> None:
    row.attempts += 1
    row.claimed_by, row.claimed_until = None, None
    if delivery.verdict is Verdict.SENT:
        row.status, row.sent_at, row.last_error = "sent", now, None
    elif delivery.verdict is Verdict.FAILED:
        row.status, row.last_error = "failed", delivery.detail
    else:
        steps = settings.delivery_backoff
        row.last_error = delivery.detail
        row.next_attempt_at = now + timedelta(seconds=steps[min(row.attempts, len(steps)) - 1])


async def _still_routed(
    session: AsyncSession, claimed: Sequence[Notification], settings: AlertsSettings
) -> tuple[list[Notification], list[Notification]]:
    """Split claimed rows into those to send and those whose recipient is gone."""
    system = {address.lower() for address in settings.system_recipients}
    live: list[Notification] = []
    gone: list[Notification] = []
    for notification in claimed:
        if notification.recipient_id is None:
            # System recipients are configuration; a recipient row removed sets the id to NULL.
            (live if notification.email in system else gone).append(notification)
            continue
        recipient = await session.get(AlertRecipient, notification.recipient_id)
        (live if recipient is not None and recipient.email == notification.email else gone).append(
            notification
        )
    return live, gone
