"""The local supervisor against real processes: small Python programs that crash, wait or trap.

Fast (seconds): what the local runtime relies on for every Airflow component — restart with
backoff and a reason, dependency order, one-shot jobs, adoption after a Sextant restart (and
never of a recycled pid), stop by signal to the leader then the whole process group.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.runtime.local_supervisor import (
    ProcessSpec,
    Readiness,
    ReadyKind,
    Supervisor,
    UnitState,
)
from tests.integration.runtime._local import pids_alive


def spec(
    tmp_path: Path,
    name: str,
    code: str,
    *,
    after: tuple[str, ...] = (),
    job: bool = False,
    readiness: Readiness | None = None,
    grace: float = 5.0,
) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        component=name,
        argv=(sys.executable, "-u", "-c", code),
        log_path=str(tmp_path / "logs" / f"{name}.log"),
        readiness=readiness or Readiness(ReadyKind.ALIVE, seconds=0.3),
        env={"PATH": os.environ["PATH"]},
        after=after,
        job=job,
        stop_grace=grace,
    )


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    sup = Supervisor(tick=0.1)
    sup.start()
    yield sup
    await sup.shutdown(grace=2)


async def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def state(sup: Supervisor, name: str, group: str = "g") -> UnitState:
    unit = sup.unit(group, name)
    assert unit is not None
    return unit.state()


async def test_a_unit_that_keeps_crashing_backs_off_with_the_reason(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    crash = spec(tmp_path, "crasher", "import sys; print('cannot open config'); sys.exit(3)")
    supervisor.ensure("g", [crash], tmp_path / "run")
    started = time.monotonic()
    await wait_for(lambda: state(supervisor, "crasher") is UnitState.CRASHLOOP)
    unit = supervisor.unit("g", "crasher")
    assert unit is not None
    assert "exited with status 3" in unit.reason
    assert "cannot open config" in unit.reason
    assert str(tmp_path / "logs" / "crasher.log") in unit.reason
    # Backoff doubles: 1 s, 2 s, 4 s ...; in 3.5 s there is room for two or three restarts.
    await asyncio.sleep(max(0.0, 3.5 - (time.monotonic() - started)))
    assert 1 <= unit.restarts <= 3
    log = (tmp_path / "logs" / "crasher.log").read_text()
    assert log.splitlines().count("cannot open config") == unit.restarts + 1


async def test_units_wait_for_what_they_come_after_and_a_job_runs_once(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "migrated"
    migrate = spec(
        tmp_path, "migrate",
        f"import time, pathlib; time.sleep(0.5); p = pathlib.Path({str(marker)!r}); "
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')",
        job=True,
    )  # fmt: skip
    server = spec(tmp_path, "server", "import time; time.sleep(60)", after=("migrate",))
    supervisor.ensure("g", [migrate, server], tmp_path / "run")
    await wait_for(lambda: state(supervisor, "migrate") is UnitState.STARTING)
    assert state(supervisor, "server") is UnitState.WAITING
    server_unit = supervisor.unit("g", "server")
    assert server_unit is not None
    assert "waiting for migrate" in server_unit.reason
    await wait_for(lambda: state(supervisor, "server") is UnitState.RUNNING)
    assert state(supervisor, "migrate") is UnitState.DONE
    await asyncio.sleep(1)
    assert marker.read_text() == "x"  # the job ran once


async def test_a_restarted_supervisor_adopts_running_processes_and_restarts_dead_ones(
    tmp_path: Path,
) -> None:
    specs = [
        spec(tmp_path, "server", "import time; time.sleep(60)"),
        spec(tmp_path, "other", "import time; time.sleep(60)"),
    ]
    first = Supervisor(tick=0.1)
    first.start()
    first.ensure("g", specs, tmp_path / "run")
    await wait_for(lambda: all(v.state is UnitState.RUNNING for v in first.views("g")))
    pids = {v.name: v.pid for v in first.views("g")}
    await first.aclose()  # Sextant stops; its processes do not
    assert pids_alive([p for p in pids.values() if p]) == sorted(p for p in pids.values() if p)
    # One of them dies while nobody supervises.
    other = pids["other"]
    assert other is not None
    os.kill(other, 9)
    await wait_for(lambda: pids_alive([other]) == [])

    second = Supervisor(tick=0.1)
    second.start()
    try:
        second.ensure("g", specs, tmp_path / "run")
        await wait_for(lambda: all(v.state is UnitState.RUNNING for v in second.views("g")))
        now = {v.name: v.pid for v in second.views("g")}
        assert now["server"] == pids["server"]  # adopted
        assert now["other"] not in (None, pids["other"])  # restarted
        await second.stop_group("g", grace=2)
        assert pids_alive([p for p in [*pids.values(), *now.values()] if p]) == []
    finally:
        await second.shutdown(grace=1)


async def test_a_recycled_pid_is_never_adopted(supervisor: Supervisor, tmp_path: Path) -> None:
    server = spec(tmp_path, "server", "import time; time.sleep(60)")
    run = tmp_path / "run"
    run.mkdir()
    # A pid file naming a live process that is not ours (this test process) with another
    # start time, as after a reboot.
    (run / "server.json").write_text(
        json.dumps({"pid": os.getpid(), "start_ticks": 1, "fingerprint": server.fingerprint()})
    )
    supervisor.ensure("g", [server], run)
    await wait_for(lambda: state(supervisor, "server") is UnitState.RUNNING)
    unit = supervisor.unit("g", "server")
    assert unit is not None
    assert unit.pid != os.getpid()


async def test_stop_signals_the_leader_lets_it_finish_then_clears_its_group(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    # A leader that finishes its work on SIGTERM (like Celery's warm shutdown) and a child.
    code = (
        "import signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(f'childpid={child.pid};', flush=True)\n"
        "def term(*_):\n"
        "    time.sleep(1); print('finished running work', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "time.sleep(60)\n"
    )
    supervisor.ensure("g", [spec(tmp_path, "worker", code, grace=10)], tmp_path / "run")
    await wait_for(lambda: state(supervisor, "worker") is UnitState.RUNNING)
    log = tmp_path / "logs" / "worker.log"
    await wait_for(lambda: "childpid=" in log.read_text().splitlines()[-1])
    child = int(log.read_text().splitlines()[-1].split("childpid=")[1].split(";")[0])
    leader = supervisor.unit("g", "worker")
    assert leader is not None
    assert leader.pid is not None
    pid = leader.pid
    await supervisor.stop_group("g")
    assert "finished running work" in log.read_text()
    assert pids_alive([pid, child]) == []


async def test_a_leader_that_ignores_its_stop_signal_is_killed_after_its_grace(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor.ensure("g", [spec(tmp_path, "stubborn", code, grace=1)], tmp_path / "run")
    await wait_for(lambda: state(supervisor, "stubborn") is UnitState.RUNNING)
    unit = supervisor.unit("g", "stubborn")
    assert unit is not None
    assert unit.pid is not None
    pid = unit.pid
    started = time.monotonic()
    await supervisor.stop_group("g")
    assert 0.9 < time.monotonic() - started < 5
    assert pids_alive([pid]) == []


async def test_a_changed_spec_restarts_the_unit(supervisor: Supervisor, tmp_path: Path) -> None:
    first = spec(tmp_path, "server", "import time; time.sleep(60)")
    supervisor.ensure("g", [first], tmp_path / "run")
    await wait_for(lambda: state(supervisor, "server") is UnitState.RUNNING)
    old = supervisor.unit("g", "server")
    assert old is not None
    old_pid = old.pid
    assert supervisor.ensure("g", [first], tmp_path / "run") == 0  # unchanged: nothing to do
    changed = spec(tmp_path, "server", "import time; time.sleep(61)")
    assert supervisor.ensure("g", [changed], tmp_path / "run") == 1
    await wait_for(
        lambda: (
            (u := supervisor.unit("g", "server")) is not None
            and u.pid not in (None, old_pid)
            and u.state() is UnitState.RUNNING
        )
    )
    assert old_pid is not None
    assert pids_alive([old_pid]) == []
