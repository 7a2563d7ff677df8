"""Pure parts of the local supervisor: backoff, specs as stored in state files, pid identity."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app.runtime.local_supervisor import (
    BACKOFF_MAX,
    ProcessSpec,
    Readiness,
    ReadyKind,
    backoff,
    process_start_ticks,
    rotate_log,
    specs_from_json,
    specs_to_json,
)


def test_backoff_doubles_from_one_second_and_is_capped() -> None:
    assert [backoff(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, BACKOFF_MAX, BACKOFF_MAX]


def make(**changes: object) -> ProcessSpec:
    fields: dict[str, object] = {
        "name": "workers-2",
        "component": "workers",
        "argv": ("/venv/bin/airflow", "celery", "worker"),
        "log_path": "/state/d/logs/workers-2.log",
        "readiness": Readiness(ReadyKind.LOG, pattern=" ready."),
        "env": {"AIRFLOW_HOME": "/state/d/airflow"},
        "cwd": "/state/d",
        "after": ("migrate", "redis"),
        "stop_signal": int(signal.SIGTERM),
        "stop_grace": 600.0,
        "title": "Celery worker workers-2",
    }
    fields.update(changes)
    return ProcessSpec(**fields)  # type: ignore[arg-type]


def test_specs_survive_the_state_file_unchanged() -> None:
    specs = [make(), make(name="postgresql", run_as="postgres", job=False)]
    assert specs_from_json(specs_to_json(specs)) == specs


@pytest.mark.parametrize(
    ("change", "restarts"),
    [
        ({"argv": ("/venv/bin/airflow", "celery", "worker", "-q", "x")}, True),
        ({"env": {"AIRFLOW_HOME": "/elsewhere"}}, True),
        ({"run_as": "postgres"}, True),
        ({"title": "another title"}, False),
        ({"stop_grace": 30.0}, False),
        ({"readiness": Readiness(ReadyKind.ALIVE)}, False),
    ],
)
def test_only_what_makes_the_process_changes_its_fingerprint(
    change: dict[str, object], restarts: bool
) -> None:
    assert (make().fingerprint() != make(**change).fingerprint()) is restarts


def test_a_process_is_identified_by_pid_and_start_time() -> None:
    mine = process_start_ticks(os.getpid())
    assert isinstance(mine, int)
    assert mine > 0
    assert process_start_ticks(os.getpid()) == mine
    assert process_start_ticks(2**22 + 12345) is None  # beyond pid_max: never a process


@pytest.mark.parametrize(
    ("readiness", "words"),
    [
        (Readiness(ReadyKind.TCP, port=18080), "127.0.0.1:18080 to accept connections"),
        (Readiness(ReadyKind.HTTP, url="http://127.0.0.1:1/api/v2/version"), "/api/v2/version"),
        (Readiness(ReadyKind.LOG, pattern=" ready."), "' ready.' in its log"),
        (Readiness(ReadyKind.ALIVE, seconds=5), "stay up 5 s"),
    ],
)
def test_readiness_says_what_is_waited_for(readiness: Readiness, words: str) -> None:
    assert words in readiness.describe()


def test_a_log_over_the_cap_is_copied_aside_and_emptied_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "workers-1.log"
    with log.open("ab") as writer:  # as the supervisor opens a process's output
        writer.write(b"a" * 600 + b"\n")
        writer.flush()
        assert not rotate_log(log, 1000)
        writer.write(b"b" * 600 + b"\n")
        writer.flush()
        assert rotate_log(log, 1000)
        assert (
            tmp_path / "workers-1.log.1"
        ).read_bytes() == b"a" * 600 + b"\n" + b"b" * 600 + b"\n"
        assert log.read_bytes() == b""
        writer.write(b"next\n")
        writer.flush()
    # Appending, the writer starts the emptied file: no hole of the old size.
    assert log.read_bytes() == b"next\n"
    log.write_bytes(b"c" * 2000)
    assert rotate_log(log, 1000)
    assert (tmp_path / "workers-1.log.1").read_bytes() == b"c" * 2000  # the older copy went
    assert not rotate_log(tmp_path / "missing.log", 1000)
