"""The pure parts of the log reads: ids, queries, cursors, documents to lines, the tail window."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.errors import InvalidInput, Unavailable
from app.logs.schemas import ComponentLogFilter, LogComponent, LogLevel, TaskTry
from app.logs.service import (
    TailWindow,
    component_line,
    component_log_query,
    decode_cursor,
    encode_cursor,
    from_nanos,
    iso_nanos,
    levels_at_or_above,
    logs,
    parse_offset,
    task_lines,
    task_log_id,
    task_log_query,
    to_nanos,
)

RUN_ID = "manual__2026-11-24T10:00:00.123456+00:00"


def hit(source: dict[str, Any], *sort: Any) -> dict[str, Any]:
    return {"_source": source, "sort": list(sort)}


# -- ids and queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_try", "log_id"),
    [
        (TaskTry(dag_id="etl", run_id=RUN_ID, task_id="load"), f"etl-load-{RUN_ID}--1-1"),
        (
            TaskTry(dag_id="etl", run_id=RUN_ID, task_id="g.load", try_number=3, map_index=7),
            f"etl-g.load-{RUN_ID}-7-3",
        ),
    ],
)
def test_log_id_is_airflows_default_template(task_try: TaskTry, log_id: str) -> None:
    assert task_log_id(task_try) == log_id


def test_task_query_matches_the_exact_log_id_after_the_cursor_in_offset_order() -> None:
    body = task_log_query("etl-load-x--1-1", 41, 1000)
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"log_id": "etl-load-x--1-1"}} in filters
    assert {"range": {"offset": {"gt": 41}}} in filters
    assert body["sort"][0]["offset"]["order"] == "asc"
    assert body["size"] == 1000
    assert "from" not in body


def test_task_query_without_cursor_starts_at_the_first_line() -> None:
    filters = task_log_query("x", None, 10)["query"]["bool"]["filter"]
    assert not [f for f in filters if "range" in f]


def test_component_query_excludes_task_lines_and_pages_newest_first() -> None:
    wanted = ComponentLogFilter(component=LogComponent.SCHEDULER, text="heartbeat")
    body = component_log_query(wanted, size=101, search_after=[5, ".ds-a", 9])
    assert body["query"]["bool"]["must_not"] == [{"exists": {"field": "log_id"}}]
    assert {"term": {"component": "scheduler"}} in body["query"]["bool"]["filter"]
    assert [next(iter(s)) for s in body["sort"]] == ["@timestamp", "_index", "_seq_no"]
    assert body["sort"][0]["@timestamp"]["order"] == "desc"
    assert body["search_after"] == [5, ".ds-a", 9]


def test_component_query_window_is_half_open() -> None:
    since = datetime(2026, 11, 24, 10, tzinfo=UTC)
    wanted = ComponentLogFilter(since=since, until=since + timedelta(hours=1))
    (window,) = [f for f in component_log_query(wanted, size=1)["query"]["bool"]["filter"]]
    assert window == {
        "range": {"@timestamp": {"gte": "2026-11-24T10:00:00Z", "lt": "2026-11-24T11:00:00Z"}}
    }


@pytest.mark.parametrize(
    ("level", "includes", "excludes"),
    [
        (LogLevel.DEBUG, ["debug", "INFO", "critical"], []),
        (LogLevel.WARNING, ["warning", "WARNING", "warn", "error", "ERROR", "critical"], ["info"]),
        (LogLevel.ERROR, ["error", "ERROR", "critical", "CRITICAL"], ["warning", "WARNING"]),
        (LogLevel.CRITICAL, ["critical", "CRITICAL"], ["error"]),
    ],
)
def test_a_level_filter_keeps_that_level_and_above_in_both_airflow_spellings(
    level: LogLevel, includes: list[str], excludes: list[str]
) -> None:
    names = levels_at_or_above(level)
    assert set(includes) <= set(names)
    assert not set(excludes) & set(names)


# -- cursors ------------------------------------------------------------------------------------


def test_a_cursor_round_trips_a_nanosecond_timestamp_exactly() -> None:
    sort = [1795514400000001999, ".ds-airflow-logs-etl-2026.11.24-000003", 12]
    assert decode_cursor(encode_cursor(sort)) == sort


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        _b64([1, 2, 3]),
        _b64([1, "x"]),
        _b64({"a": 1}),
        _b64([1.5, "x", 1]),
        _b64([True, "x", 1]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_anything_but_our_cursor_is_invalid_input_naming_the_parameter(cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(cursor)
    assert caught.value.details[0]["field"] == "query.cursor"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("0", 0), ("1755011166339518208", 1755011166339518208)],
)
def test_offsets_parse_to_64_bit_integers(value: str | None, expected: int | None) -> None:
    assert parse_offset(value) == expected


@pytest.mark.parametrize("value", ["-1", "1e3", "9223372036854775808", "99999999999999999999", ""])
def test_offsets_outside_64_bits_or_not_integers_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_offset(value)


# -- documents to lines -------------------------------------------------------------------------


def test_airflow_3_lines_use_event_and_the_end_mark_ends_the_log_unseen() -> None:
    hits = [
        hit({"event": "start", "level": "info", "timestamp": "t1", "logger": "task"}, 1),
        hit({"event": "done", "level": "info", "timestamp": "t2"}, 2),
        hit({"event": "end_of_log", "level": "info"}, 3),
    ]
    lines, ended = task_lines(hits)
    assert [(line["offset"], line["message"]) for line in lines] == [("1", "start"), ("2", "done")]
    assert lines[0]["logger"] == "task"
    assert ended


def test_airflow_2_lines_use_message_levelname_and_nanosecond_offsets_as_strings() -> None:
    offset = 1755011166339518208  # above 2**53: a JavaScript number would round it
    hits = [
        hit({"message": "Dependencies all met", "levelname": "INFO", "host": "w-1"}, offset),
        hit({"message": "end_of_log"}, offset + 1),
    ]
    lines, ended = task_lines(hits)
    assert lines == [
        {
            "offset": "1755011166339518208",
            "timestamp": None,
            "level": "INFO",
            "message": "Dependencies all met",
            "logger": None,
            "host": "w-1",
        }
    ]
    assert ended


def test_a_log_without_its_mark_has_not_ended() -> None:
    lines, ended = task_lines([hit({"event": "still running"}, 1)])
    assert len(lines) == 1
    assert not ended


def test_ecs_nested_host_and_a_missing_line_are_read() -> None:
    lines, _ = task_lines([hit({"host": {"name": "node-1"}}, 5)])
    assert lines[0]["host"] == "node-1"
    assert lines[0]["message"] == ""


def test_component_line_takes_its_time_from_the_nanosecond_sort_value() -> None:
    at = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    line = component_line(
        hit(
            {"event": "Heartbeat", "level": "info", "component": "scheduler"},
            to_nanos(at) + 789,
            ".ds-a",
            1,
        )
    )
    assert line.timestamp == at
    assert (line.component, line.level, line.message) == ("scheduler", "info", "Heartbeat")


def test_nanosecond_conversions_agree() -> None:
    at = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    assert from_nanos(to_nanos(at)) == at
    assert iso_nanos(to_nanos(at) + 789) == "2026-11-24T10:00:00.123456789Z"


# -- the tail window ----------------------------------------------------------------------------


def test_the_window_sends_each_line_once_and_admits_late_arrivals_within_grace() -> None:
    window = TailWindow(start_ns=1_000, grace_ns=100)
    assert window.read_from() == 1_000
    assert window.admit([1_050, "a", 1])
    assert window.admit([1_200, "a", 2])
    assert not window.admit([1_200, "a", 2])  # read again by the next poll
    assert window.read_from() == 1_100
    assert window.admit([1_150, "b", 1])  # arrived late, still in the window
    assert not window.admit([1_099, "b", 2])  # too late: before the window


def test_the_window_forgets_identities_that_left_it() -> None:
    window = TailWindow(start_ns=0, grace_ns=10)
    for seq_no, at in enumerate([1, 5, 20, 25]):
        window.admit([at, "a", seq_no])
    window.forget_old()
    assert set(window.sent) == {("a", 2), ("a", 3)}


def test_nothing_before_the_start_is_sent() -> None:
    window = TailWindow(start_ns=1_000, grace_ns=500)
    assert not window.admit([999, "a", 1])


# -- the service without Elasticsearch ----------------------------------------------------------


async def test_without_elasticsearch_configured_a_read_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="not configured"):
        await logs.task_log(
            None,
            "airflow-logs-etl",
            TaskTry(dag_id="d", run_id="r", task_id="t"),
            after=None,
            limit=10,
        )
