"""A live tail's event sequence (app/logs/service.py `Follow`), with scripted polls."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from app.core.errors import Unavailable
from app.logs.service import FOLLOWS_ACTIVE, Follow, FollowEvent


def line(n: int) -> FollowEvent:
    return FollowEvent("line", {"message": f"line {n}"}, str(n))


def scripted(*answers: list[FollowEvent] | bool | Exception) -> Follow:
    """A tail whose polls answer in turn: lines, True for the end mark, an error to raise."""
    script: Iterator[list[FollowEvent] | bool | Exception] = iter(answers)

    async def poll() -> tuple[list[FollowEvent], bool]:
        answer = next(script, [])
        if isinstance(answer, Exception):
            raise answer
        if answer is True:
            return [], True
        return (answer if isinstance(answer, list) else []), False

    return Follow(poll, [line(0)], False, max_seconds=5, interval=0.01, keepalive=60)


async def collect(follow: Follow) -> list[FollowEvent | None]:
    return [event async for event in follow.events()]


async def test_lines_come_in_poll_order_and_the_end_mark_ends_the_tail() -> None:
    events = await collect(scripted([line(1), line(2)], [], [line(3)], True))
    assert [e.id for e in events if e is not None and e.event == "line"] == ["0", "1", "2", "3"]
    last = events[-1]
    assert last is not None
    assert (last.event, last.data) == ("end", {"reason": "end_of_log"})


async def test_an_ended_log_ends_after_its_first_lines() -> None:
    async def never() -> tuple[list[FollowEvent], bool]:
        raise AssertionError("no poll after the end")

    follow = Follow(never, [line(1)], True, max_seconds=5, interval=0.01)
    events = await collect(follow)
    assert [e.event for e in events if e is not None] == ["line", "end"]


async def test_the_tail_ends_at_its_time_limit() -> None:
    async def nothing() -> tuple[list[FollowEvent], bool]:
        return [], False

    started = time.monotonic()
    events = await collect(Follow(nothing, [], False, max_seconds=0.3, interval=0.05))
    assert 0.25 <= time.monotonic() - started < 2
    last = events[-1]
    assert last is not None
    assert (last.event, last.data) == ("end", {"reason": "time_limit"})


async def test_an_outage_is_reported_once_and_the_tail_resumes() -> None:
    down = Unavailable("Elasticsearch is unavailable")
    events = await collect(scripted(down, down, [line(1)], down, [line(2)], True))
    kinds = [e.event for e in events if e is not None]
    assert kinds == ["line", "unavailable", "line", "unavailable", "line", "end"]


async def test_an_idle_tail_sends_keepalives() -> None:
    async def nothing() -> tuple[list[FollowEvent], bool]:
        return [], False

    follow = Follow(nothing, [], False, max_seconds=0.5, interval=0.05, keepalive=0.1)
    events = await collect(follow)
    assert events.count(None) >= 2


@pytest.mark.parametrize("stop_after", [0, 2])
async def test_a_tail_the_client_leaves_is_released(stop_after: int) -> None:
    before = FOLLOWS_ACTIVE._value.get()
    follow = scripted(*([[line(n)] for n in range(1, 100)]))
    events = follow.events()
    for _ in range(stop_after + 1):
        await anext(events)
    assert FOLLOWS_ACTIVE._value.get() == before + 1
    await events.aclose()  # what the server does when the client disconnects
    assert FOLLOWS_ACTIVE._value.get() == before
