"""The shipper's rules for one line (those of fluentd/pipeline.conf) and for reading a file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.logs.shipping import Source, component_of, document, end_mark, read_new, task_log_file

SOURCE = Source("etl", "data-team", "workers", "vm")
READ_AT = datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC)
NANOS = 1_796_551_200_123_456_000


@pytest.mark.parametrize(
    ("name", "component"),
    [
        ("scheduler.log", "scheduler"),
        ("workers-12.log", "workers"),
        ("api_server.log", "api_server"),
        ("dag_processor.log", "dag_processor"),
        ("redis.log", None),
        ("pgbouncer.log", None),
        ("migrate.log", None),
        ("workers-x.log", None),
    ],
)
def test_the_component_comes_from_the_file_name(name: str, component: str | None) -> None:
    assert component_of(Path(name)) == component


def test_an_airflow3_task_line_keeps_its_log_id_offset_and_timestamp() -> None:
    line = {
        "timestamp": "2026-12-06T09:00:00.5Z", "level": "info", "event": "hi", "log_id": "a-b",
        "offset": 7, "dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1,
        "try_number": 1,
    }  # fmt: skip
    doc = document(json.dumps(line), SOURCE, READ_AT)
    assert doc["log_id"] == "a-b"
    assert doc["offset"] == 7
    assert doc["@timestamp"] == "2026-12-06T09:00:00.5Z"
    assert (doc["deployment"], doc["workspace"], doc["component"], doc["host"]) == (
        "etl", "data-team", "workers", "vm",
    )  # fmt: skip


def test_a_record_with_the_task_fields_but_no_log_id_gets_airflows() -> None:
    line = {"message": "x", "dag_id": "d", "task_id": "t", "run_id": "r", "map_index": 2,
            "try_number": 3}  # fmt: skip
    doc = document(json.dumps(line), SOURCE, READ_AT)
    assert doc["log_id"] == "d-t-r-2-3"
    assert "event" not in doc  # Airflow 2's `message` is the line


def test_a_text_line_is_kept_whole_with_read_time_and_ordered_offsets() -> None:
    first = document("celery@vm ready.", SOURCE, READ_AT, 0)
    second = document("[not json", SOURCE, READ_AT, 1)
    assert first["event"] == "celery@vm ready."
    assert "log_id" not in first
    assert first["@timestamp"] == "2026-12-06T10:00:00.123456Z"
    assert (first["offset"], second["offset"]) == (NANOS, NANOS + 1)
    # JSON that is not an object is a text line too.
    assert document("[1, 2]", SOURCE, READ_AT)["event"] == "[1, 2]"


def test_the_end_mark_follows_the_last_line() -> None:
    last = document(
        json.dumps({"event": "done", "log_id": "L", "offset": 9, "dag_id": "d", "task_id": "t",
                    "run_id": "r", "map_index": -1, "try_number": 1}),
        SOURCE, READ_AT,
    )  # fmt: skip
    mark = end_mark(last)
    assert (mark["event"], mark["offset"], mark["log_id"]) == ("end_of_log", 10, "L")
    assert mark["@timestamp"] == last["@timestamp"]


def test_a_tries_local_file_follows_airflows_default_template() -> None:
    record = {"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 2, "map_index": -1}
    assert task_log_file(Path("/l"), record) == Path("/l/dag_id=d/run_id=r/task_id=t/attempt=2.log")
    mapped = {**record, "map_index": 4}
    assert task_log_file(Path("/l"), mapped).parent.name == "map_index=4"


def test_reading_takes_whole_lines_and_starts_over_on_a_new_or_truncated_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scheduler.log"
    path.write_bytes(b"one\n\ntwo\nthr")
    chunk = read_new(path, None, 1024)
    assert chunk is not None
    assert [text for _, text in chunk.lines] == ["one", "two"]
    assert [at for at, _ in chunk.lines] == [0, 5]
    assert chunk.end == 9
    position = {"inode": chunk.inode, "offset": chunk.end}
    with path.open("ab") as handle:
        handle.write(b"ee\n")
    again = read_new(path, position, 1024)
    assert again is not None
    assert [(at, text) for at, text in again.lines] == [(9, "three")]
    # Truncated below the position: read from the start.
    path.write_bytes(b"new\n")
    truncated = read_new(path, {"inode": again.inode, "offset": 15}, 1024)
    assert truncated is not None
    assert [t for _, t in truncated.lines] == ["new"]
    # Replaced (another inode): from the start too.
    replacement = tmp_path / "other"
    replacement.write_bytes(b"fresh\n")
    os.replace(replacement, path)
    chunk = read_new(path, {"inode": again.inode, "offset": 2}, 1024)
    assert chunk is not None
    assert [t for _, t in chunk.lines] == ["fresh"]


def test_a_line_longer_than_a_read_is_shipped_in_pieces(tmp_path: Path) -> None:
    path = tmp_path / "workers-1.log"
    path.write_bytes(b"x" * 10)
    chunk = read_new(path, None, 4)
    assert chunk is not None
    assert [t for _, t in chunk.lines] == ["xxxx"]
    assert chunk.end == 4
    assert read_new(tmp_path / "missing.log", None, 4) is None
