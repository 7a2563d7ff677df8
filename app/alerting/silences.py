"""Silences: time-bounded matchers on workspace, deployment, rule and severity.

A silenced alert still changes state and still shows in the API as firing (silenced); only its
notifications are held back. An expired silence stops applying on its own, by its end time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

SILENCEABLE_LABELS = ("workspace", "deployment", "rule", "severity")


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    type: MatchType
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher (absent labels are empty strings)."""
        actual = labels.get(self.label, "")
        if self.type is MatchType.EQUAL:
            return actual == self.value
        if self.type is MatchType.NOT_EQUAL:
            return actual != self.value
        # Anchored, as in Prometheus and Alertmanager.
        found = re.fullmatch(self.value, actual) is not None
        return found if self.type is MatchType.REGEX else not found


@dataclass(frozen=True, slots=True)
class SilenceWindow:
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime

    def active(self, now: datetime) -> bool:
        """Whether the silence applies at `now`."""
        return self.starts_at <= now < self.ends_at

    def silences(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Whether this silence holds back notifications for an alert with these labels."""
        return self.active(now) and all(m.matches(labels) for m in self.matchers)


def silenced(labels: Mapping[str, str], windows: Iterable[SilenceWindow], now: datetime) -> bool:
    """Whether any active silence matches the alert's labels."""
    return any(window.silences(labels, now) for window in windows)
