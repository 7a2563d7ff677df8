"""Which notice a recipient is due: first, repeat after the interval, resolved once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.alerting.dedup import LastSent, NoticeKind, notice_due

FIRED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
REPEAT = timedelta(hours=4)


def at(minutes: int) -> datetime:
    return FIRED + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("firing", "last", "now", "expected"),
    [
        (True, None, at(0), NoticeKind.FIRING),
        (True, LastSent(NoticeKind.FIRING, at(0), FIRED), at(5), None),
        (True, LastSent(NoticeKind.FIRING, at(0), FIRED), at(240), NoticeKind.REPEAT),
        (True, LastSent(NoticeKind.REPEAT, at(240), FIRED), at(300), None),
        (True, LastSent(NoticeKind.RESOLVED, at(-60), at(-90)), at(0), NoticeKind.FIRING),
        (True, LastSent(NoticeKind.FIRING, at(-90), at(-90)), at(0), NoticeKind.FIRING),
        (False, LastSent(NoticeKind.FIRING, at(0), FIRED), at(10), NoticeKind.RESOLVED),
        (False, LastSent(NoticeKind.RESOLVED, at(10), FIRED), at(11), None),
        (False, None, at(10), None),  # never told it fired (e.g. silenced): no resolved notice
    ],
)
def test_notice_due(
    firing: bool, last: LastSent | None, now: datetime, expected: NoticeKind | None
) -> None:
    assert notice_due(firing, FIRED, last, now, REPEAT) is expected
