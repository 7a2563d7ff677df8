"""Delivering e-mail over SMTP (aiosmtplib), with connections kept open and reused.

Alertmanager dials a new SMTP session per notification; at fleet scale that is most of the cost.
Here a small pool of sessions sends many messages each, several sessions at once, and each
message (always one recipient) gets its own verdict:

    sent        the server accepted it
    retry       a transient failure (4xx, connection lost, timeout): try again later
    failed      a permanent refusal (5xx, e.g. 550 unknown user): do not retry
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

import aiosmtplib
from aiosmtplib.email import flatten_message

from app.core.settings import SmtpSettings
from app.integrations.errors import truncate

logger = logging.getLogger(__name__)


class Verdict(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    verdict: Verdict
    detail: str = ""


class PreparedMessage(EmailMessage):
    """An e-mail whose bytes on the wire are already known, with its one envelope recipient.

    Alert e-mails of one event differ only in `To` and `Message-ID`: their body is serialized
    once and shared (app/alerting/email.py), and the Mailer sends these bytes as they are
    instead of flattening the whole message again for every recipient.
    """

    def __init__(self, sender: str, recipient: str, wire: bytes) -> None:
        super().__init__()
        self.envelope_sender = sender
        self.envelope_recipient = recipient
        self.wire = wire


def serialize(message: EmailMessage) -> bytes:
    """The bytes of `message` as any SMTP server takes them (CRLF line ends, 7-bit clean)."""
    return flatten_message(message, utf8=False, cte_type="7bit")


class Mailer:
    """Sends messages through a bounded pool of reused SMTP sessions."""

    def __init__(self, settings: SmtpSettings, concurrency: int = 4, timeout: float = 10.0):
        if not settings.host:
            raise ValueError("SMTP is not configured (SEXTANT_SMTP_HOST)")
        self.settings = settings
        self.concurrency = concurrency
        self.timeout = timeout
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(concurrency)

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[Delivery]:
        """Send every message; the verdicts come back in the same order."""
        return list(await asyncio.gather(*(self.send(m) for m in messages)))

    async def send(self, message: EmailMessage) -> Delivery:
        """Send one message over a pooled session."""
        async with self._slots:
            try:
                client = await self._session()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                return Delivery(Verdict.RETRY, f"connecting to SMTP: {_describe(exc)}")
            try:
                if isinstance(message, PreparedMessage):
                    errors, _ = await client.sendmail(
                        message.envelope_sender, [message.envelope_recipient], message.wire
                    )
                else:
                    errors, _ = await client.send_message(message)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                await self._recycle(client)
                return _refused([(r.code, r.message) for r in exc.recipients])
            except aiosmtplib.SMTPResponseException as exc:
                await self._recycle(client)
                verdict = Verdict.FAILED if 500 <= exc.code < 600 else Verdict.RETRY
                return Delivery(verdict, f"SMTP {exc.code}: {truncate(exc.message)}")
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await _discard(client)
                return Delivery(Verdict.RETRY, _describe(exc))
            self._idle.append(client)
            if errors:
                return _refused(list(errors.values()))
            return Delivery(Verdict.SENT)

    async def _session(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.host, port=settings.port, timeout=self.timeout,
            start_tls=settings.starttls, use_tls=False,
        )  # fmt: skip
        await client.connect()
        if settings.username and settings.password is not None:
            await client.login(settings.username, settings.password.get_secret_value())
        return client

    async def _recycle(self, client: aiosmtplib.SMTP) -> None:
        # After a refused transaction the session must be reset before it carries another.
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await _discard(client)
            return
        self._idle.append(client)

    async def close(self) -> None:
        """Say goodbye on every idle session."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                await _discard(client)


def _refused(answers: list[tuple[int, str]]) -> Delivery:
    code, text = answers[0]
    verdict = Verdict.FAILED if 500 <= code < 600 else Verdict.RETRY
    return Delivery(verdict, f"SMTP {code}: {truncate(text)}")


def _describe(exc: BaseException) -> str:
    return truncate(f"{type(exc).__name__}: {exc}")


async def _discard(client: aiosmtplib.SMTP) -> None:
    try:
        client.close()
    except (aiosmtplib.SMTPException, OSError):
        logger.debug("closing a broken SMTP session failed", exc_info=True)
