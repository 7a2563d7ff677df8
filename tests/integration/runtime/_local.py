"""Shared pieces of the local runtime's integration and end-to-end tests.

They run real Airflow 3 processes from the venv `scripts/airflow-env.sh` (or `sextant local
setup`) makes, with PostgreSQL, PgBouncer, Redis and statsd_exporter from install-test-deps.sh.
A missing piece skips the test (fails under SEXTANT_REQUIRE_REAL=1) with what to install.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi import FastAPI

from app.core.settings import LocalSettings
from app.runtime.local import LocalRuntime
from app.runtime.local_tools import ToolMissing, airflow_installed, find_tools, venv_path
from tests.harness.availability import ComponentUnavailable, report_unavailable

T = TypeVar("T")

# A DAG that needs a Celery worker (a real task, not an EmptyOperator) and finishes in seconds.
E2E_DAG_ID = "sextant_e2e"
E2E_DAG = """\
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="sextant_e2e",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
):
    BashOperator(task_id="hello", bash_command="echo hello from $HOSTNAME")
"""
# A task that runs long enough to be caught by a worker's warm shutdown.
SLOW_DAG_ID = "sextant_slow"
SLOW_DAG = """\
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="sextant_slow",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
):
    BashOperator(task_id="slow", bash_command="sleep 25 && echo finished")
"""


def local_settings(state_dir: Path) -> LocalSettings:
    """Local runtime settings over a test's own state dir, the machine's tools."""
    return LocalSettings(state_dir=state_dir)


def require_local_runtime(settings: LocalSettings) -> None:
    """Skip (or fail under SEXTANT_REQUIRE_REAL=1) when a program the runtime runs is missing."""
    try:
        find_tools(settings)
    except ToolMissing as exc:
        report_unavailable(ComponentUnavailable("local runtime", str(exc)))
    if not airflow_installed(venv_path(settings), settings.airflow_version):
        report_unavailable(
            ComponentUnavailable(
                "airflow",
                f"{venv_path(settings)} lacks a working Airflow {settings.airflow_version}: "
                "run scripts/airflow-env.sh or `sextant local setup`",
            )
        )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short state dir (PostgreSQL's socket path is limited) that `postgres` can reach."""
    path = Path(tempfile.mkdtemp(prefix="sx-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def until(
    condition: Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    progress: Callable[[], str] | None = None,
    every: float = 1.0,
) -> T:
    """Await `condition` until truthy; print progress every 10 s; fail with the last state."""
    started = time.monotonic()
    last_print = started
    while True:
        value = await condition()
        if value:
            return value
        now = time.monotonic()
        if now - started > timeout:
            detail = progress() if progress else repr(value)
            raise AssertionError(f"not within {timeout:g}s: {what}\n{detail}")
        if progress is not None and now - last_print >= 10:
            print(f"[{now - started:5.0f}s] waiting for {what}: {progress()}", flush=True)
            last_print = now
        await asyncio.sleep(every)


def pids_alive(pids: list[int]) -> list[int]:
    """The pids of the list that still run."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        alive.append(pid)
    return alive


def runtime_of(app: FastAPI) -> LocalRuntime:
    """The local runtime an app runs deployments with."""
    runtime = app.state.targets[0]
    assert isinstance(runtime, LocalRuntime)
    return runtime


def unit_pids(runtime: LocalRuntime, deployment: str) -> list[int]:
    """The leader pids of a deployment's running processes."""
    return [v.pid for v in runtime.supervisor.views(deployment) if v.pid is not None]
