"""Silence matching and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.alerting.silences import Matcher, MatchType, SilenceWindow, silenced

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LABELS = {"workspace": "data-eng", "deployment": "etl-prod", "rule": "AirflowSchedulerLagHigh",
          "severity": "critical"}  # fmt: skip


def window(*matchers: Matcher, start: int = -60, end: int = 60) -> SilenceWindow:
    return SilenceWindow(matchers, NOW + timedelta(minutes=start), NOW + timedelta(minutes=end))


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        (Matcher("deployment", MatchType.EQUAL, "etl-prod"), True),
        (Matcher("deployment", MatchType.EQUAL, "etl"), False),
        (Matcher("deployment", MatchType.NOT_EQUAL, "etl"), True),
        (Matcher("deployment", MatchType.REGEX, "etl-.*"), True),
        (Matcher("deployment", MatchType.REGEX, "etl"), False),  # anchored
        (Matcher("severity", MatchType.NOT_REGEX, "info|warning"), True),
        (Matcher("team", MatchType.EQUAL, ""), True),  # absent label is empty
    ],
)
def test_matchers(matcher: Matcher, expected: bool) -> None:
    assert matcher.matches(LABELS) is expected


def test_all_matchers_of_a_silence_must_match() -> None:
    both = window(Matcher("workspace", MatchType.EQUAL, "data-eng"),
                  Matcher("rule", MatchType.EQUAL, "Other"))  # fmt: skip
    assert not silenced(LABELS, [both], NOW)


@pytest.mark.parametrize(("start", "end", "expected"), [(-60, 60, True), (-60, 0, False),
                                                        (1, 60, False), (0, 1, True)])  # fmt: skip
def test_silences_apply_only_inside_their_window(start: int, end: int, expected: bool) -> None:
    silence = window(Matcher("deployment", MatchType.EQUAL, "etl-prod"), start=start, end=end)
    assert silenced(LABELS, [silence], NOW) is expected
