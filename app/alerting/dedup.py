"""Whether a recipient must be told about an alert now: first notice, repeat, or resolved.

Keyed by (deployment, rule) — the group — and recipient, against what was last sent to them, in
the manner of Alertmanager's notification log: a firing alert is sent once, then again only after
`repeat_interval`; a resolved alert is sent once to those who were told it fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class NoticeKind(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class LastSent:
    """What a recipient was last sent for a group, and when."""

    kind: NoticeKind
    at: datetime
    episode: datetime  # fired_at of the alert episode it was about


def notice_due(
    firing: bool,
    fired_at: datetime | None,
    last: LastSent | None,
    now: datetime,
    repeat_interval: timedelta,
) -> NoticeKind | None:
    """The notice a recipient is due for an alert group now, or None."""
    if firing:
        if fired_at is None:
            return None
        if last is None or last.episode != fired_at or last.kind is NoticeKind.RESOLVED:
            return NoticeKind.FIRING
        return NoticeKind.REPEAT if now - last.at >= repeat_interval else None
    if last is not None and last.kind is not NoticeKind.RESOLVED and last.episode == fired_at:
        return NoticeKind.RESOLVED
    return None
