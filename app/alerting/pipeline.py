"""The notification pipeline, in small stages: route → silence → dedup → outbox.

Given an alert as it stands after an evaluation (or a webhook), decide who must be told what now,
and write those notifications into the outbox in the caller's transaction. Delivery is a separate
stage that reads the outbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerting.dedup import LastSent, NoticeKind, notice_due
from app.alerting.models import Alert, AlertEvent, Notification, Silence
from app.alerting.silences import Matcher, MatchType, SilenceWindow, silenced
from app.recipients.models import AlertRecipient

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Route:
    """One address an alert goes to."""

    email: str
    recipient_id: int | None = None


def route(recipients: Iterable[AlertRecipient], severity: str) -> list[Route]:
    """Recipients who want alerts of this severity, each address once."""
    rank = SEVERITY_RANK.get(severity, 2)
    seen: dict[str, Route] = {}
    for recipient in recipients:
        if SEVERITY_RANK.get(recipient.min_severity, 0) <= rank:
            seen.setdefault(recipient.email, Route(recipient.email, recipient.id))
    return sorted(seen.values(), key=lambda r: r.email)


def windows(silences: Iterable[Silence]) -> list[SilenceWindow]:
    """Stored silences as matchable windows."""
    return [
        SilenceWindow(
            tuple(Matcher(m["label"], MatchType(m["type"]), m["value"]) for m in s.matchers),
            s.starts_at,
            s.ends_at,
        )
        for s in silences
    ]


def message_id(alert_id: int, event_id: int, email: str, host: str) -> str:
    """A Message-ID fixed by what the message is about, so a re-send carries the same one."""
    digest = hashlib.sha256(email.encode()).hexdigest()[:12]
    return f"<sextant.{alert_id}.{event_id}.{digest}@{host}>"


@dataclass
class Pipeline:
    repeat_interval: timedelta
    message_host: str

    async def notify(
        self,
        session: AsyncSession,
        alert: Alert,
        labels: Mapping[str, str],
        routes: Sequence[Route],
        silence_windows: Sequence[SilenceWindow],
        last: Mapping[tuple[int, str], Notification],
        now: datetime,
        transition_event: AlertEvent | None = None,
    ) -> int:
        """Queue what each routed address is due for this alert; returns how many were queued."""
        if silenced(labels, silence_windows, now):
            return 0
        firing = alert.status == "firing"
        due: dict[NoticeKind, list[Route]] = {}
        for target in routes:
            previous = last.get((alert.id, target.email))
            sent = (
                None
                if previous is None
                else LastSent(NoticeKind(previous.kind), previous.created_at, previous.episode)
            )
            kind = notice_due(firing, alert.fired_at, sent, now, self.repeat_interval)
            if kind is not None:
                due.setdefault(kind, []).append(target)
        queued = 0
        for kind, targets in due.items():
            event = transition_event
            if event is None or event.kind != _event_kind(kind):
                event = AlertEvent(
                    alert_id=alert.id, deployment_id=alert.deployment_id, rule=alert.rule,
                    kind=kind.value, at=now, episode=alert.fired_at or now, value=alert.value,
                    threshold=alert.threshold, severity=alert.severity, source=alert.source,
                )  # fmt: skip
                session.add(event)
                await session.flush()
            for target in targets:
                session.add(
                    Notification(
                        event_id=event.id, alert_id=alert.id, deployment_id=alert.deployment_id,
                        recipient_id=target.recipient_id, email=target.email, kind=kind.value,
                        episode=alert.fired_at or now, status="pending", next_attempt_at=now,
                        message_id=message_id(alert.id, event.id, target.email,
                                              self.message_host),
                        created_at=now,
                    )
                )  # fmt: skip
                queued += 1
        return queued


def _event_kind(kind: NoticeKind) -> str:
    # A first notice sent later (after a silence ended) still belongs to the firing event.
    return "firing" if kind is NoticeKind.FIRING else kind.value
