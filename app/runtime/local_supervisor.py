"""Supervise local processes: start in dependency order, restart on crash with backoff, stop.

The local runtime runs each deployment as a group of processes (units). This module keeps every
unit as desired, whatever happens to it:

- a unit starts once the units it comes `after` are ready (services) or done (one-shot jobs,
  such as `airflow db migrate`);
- a unit that exits is restarted after a backoff that doubles with each consecutive crash
  (1 s, 2 s, 4 s ... 60 s) and is reset once the unit has stayed up for a minute; while it waits
  the unit is in `crashloop` with the exit status and the last line of its log as the reason;
- every unit writes stdout and stderr to its own log file, appended across restarts;
- every unit runs in its own session (process group), so Ctrl-C in Sextant's terminal does not
  reach it, and a stop also reaches the children it forked (task processes, pool workers);
- a stop sends the unit's stop signal to its leader only (a Celery worker then does a warm
  shutdown and lets its running tasks finish), waits the unit's grace period, then kills the
  whole process group;
- every unit's pid and kernel start time are written to a pid file, so that a Sextant that
  restarts adopts the processes still running (same pid *and* same start time, so a recycled
  pid is never mistaken for ours) and starts those that are not.

Processes outlive Sextant on purpose (that is what makes adoption possible); `shutdown()` stops
everything when a caller wants that (`sextant demo` on Ctrl-C, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.integrations.probes import http_ready, tcp_ready

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
TICK = 0.5
BACKOFF_MAX = 60.0
# A unit that stays up this long is considered healthy again: its crash count resets.
STABLE_AFTER = 60.0
# How often the logs' sizes are checked against the cap.
ROTATE_EVERY = 30.0
# Consecutive crashes after which a unit is reported as crash-looping rather than starting.
CRASHLOOP_AFTER = 2
PROBE_TIMEOUT = 2.0


class ReadyKind(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    LOG = "log"
    ALIVE = "alive"


@dataclass(frozen=True, slots=True)
class Readiness:
    """How to tell a started unit is ready: a port that accepts, a URL, a log line, or time."""

    kind: ReadyKind
    port: int = 0
    url: str = ""
    pattern: str = ""
    seconds: float = 3.0

    def describe(self) -> str:
        """What is being waited for, in words."""
        if self.kind is ReadyKind.TCP:
            return f"{HOST}:{self.port} to accept connections"
        if self.kind is ReadyKind.HTTP:
            return self.url
        if self.kind is ReadyKind.LOG:
            return f"{self.pattern!r} in its log"
        return f"it to stay up {self.seconds:g} s"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "port": self.port,
            "url": self.url,
            "pattern": self.pattern,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Readiness:
        return cls(
            kind=ReadyKind(data["kind"]),
            port=int(data.get("port", 0)),
            url=str(data.get("url", "")),
            pattern=str(data.get("pattern", "")),
            seconds=float(data.get("seconds", 3.0)),
        )


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One unit: what to run, where it logs, when it is ready and what it waits for."""

    name: str
    component: str
    argv: tuple[str, ...]
    log_path: str
    readiness: Readiness
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # Units that must be ready (or done, for jobs) first: `name` in the same group, or
    # `group:name` in another one.
    after: tuple[str, ...] = ()
    # A one-shot job: runs until it exits 0 once (per fingerprint); retried with backoff.
    job: bool = False
    # Account to run as when Sextant runs as root (PostgreSQL and PgBouncer refuse root).
    run_as: str | None = None
    stop_signal: int = int(signal.SIGTERM)
    stop_grace: float = 30.0
    # Human words for progress output ("api-server on 127.0.0.1:18080").
    title: str = ""

    def fingerprint(self) -> str:
        """A digest of what makes the process what it is; a change means a restart."""
        payload = json.dumps(
            [list(self.argv), sorted(self.env.items()), self.cwd, self.run_as], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "component": self.component,
            "argv": list(self.argv),
            "log_path": self.log_path,
            "readiness": self.readiness.to_json(),
            "env": dict(self.env),
            "cwd": self.cwd,
            "after": list(self.after),
            "job": self.job,
            "run_as": self.run_as,
            "stop_signal": self.stop_signal,
            "stop_grace": self.stop_grace,
            "title": self.title,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessSpec:
        return cls(
            name=str(data["name"]),
            component=str(data["component"]),
            argv=tuple(str(a) for a in data["argv"]),
            log_path=str(data["log_path"]),
            readiness=Readiness.from_json(data["readiness"]),
            env={str(k): str(v) for k, v in dict(data.get("env") or {}).items()},
            cwd=data.get("cwd"),
            after=tuple(str(a) for a in data.get("after") or ()),
            job=bool(data.get("job", False)),
            run_as=data.get("run_as"),
            stop_signal=int(data.get("stop_signal", signal.SIGTERM)),
            stop_grace=float(data.get("stop_grace", 30.0)),
            title=str(data.get("title", "")),
        )


class UnitState(StrEnum):
    WAITING = "waiting"  # for the units it comes after
    STARTING = "starting"  # started, not ready yet
    RUNNING = "running"
    DONE = "done"  # a job that succeeded
    BACKOFF = "backoff"  # exited; restarts when the backoff ends
    CRASHLOOP = "crashloop"  # exited repeatedly; restarts when the backoff ends
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class UnitView:
    """What status reports show of one unit."""

    group: str
    name: str
    component: str
    state: UnitState
    pid: int | None
    reason: str
    restarts: int
    since: float  # seconds in this state (or since start, while starting)
    job: bool


def backoff(crashes: int) -> float:
    """Seconds to wait before restart number `crashes` (1, 2, 4, ... capped at 60)."""
    if crashes <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, 2 ** (crashes - 1)))


def process_start_ticks(pid: int) -> int | None:
    """The kernel start time of `pid` (clock ticks since boot), or None if it does not run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        state = fields[0]
        ticks = int(fields[19])
    except (IndexError, ValueError):
        return None
    if state == "Z":  # a zombie has exited; only its parent has not collected it yet
        return None
    return ticks


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of a set of processes: RSS counts shared pages in every process that
    maps them (so forked pool workers count their parent's pages again); PSS splits them."""

    processes: int
    rss_bytes: int
    pss_bytes: int


def tree_memory(roots: Iterable[int]) -> Memory:
    """RSS and PSS of the given processes and all their descendants.

    Descendants, not sessions: PostgreSQL's children leave the postmaster's session.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
            parent = int(raw[raw.rfind(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    seen: set[int] = set()
    pending = list(roots)
    count = rss = pss = 0
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        pending.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                values = {
                    line.split(":")[0]: int(line.split()[1]) * 1024
                    for line in handle
                    if line.startswith(("Rss:", "Pss:"))
                }
        except (OSError, ValueError, IndexError):
            continue
        count += 1
        rss += values.get("Rss", 0)
        pss += values.get("Pss", 0)
    return Memory(count, rss, pss)


def log_tail(path: str | Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file (reads at most its last 64 KiB)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _last_line(path: str) -> str:
    for line in reversed(log_tail(path, 40).splitlines()):
        line = line.strip()
        if line and not line.startswith("=== sextant"):
            return line[:300]
    return ""


class Unit:
    """One supervised process and what the supervisor knows of it."""

    def __init__(self, group: str, spec: ProcessSpec, pid_file: Path) -> None:
        self.group = group
        self.spec = spec
        self.pid_file = pid_file
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.start_ticks: int | None = None
        self.started_at = 0.0  # monotonic
        self.ready = False
        self.done = False
        self.crashes = 0
        self.restarts = 0
        self.next_start = 0.0  # monotonic; 0 means "as soon as its dependencies allow"
        self.reason = "waiting to start"
        self.stopping = False
        self.state_since = time.monotonic()
        self.log_offset = 0
        self._log_position = 0
        self._log_carry = b""
        self.fingerprint = spec.fingerprint()

    @property
    def key(self) -> str:
        return f"{self.group}:{self.spec.name}"

    def alive(self) -> bool:
        """Whether the process runs (reaping it if it is our child and has exited)."""
        if self.pid is None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        return process_start_ticks(self.pid) == self.start_ticks

    def exit_status(self) -> str:
        if self.popen is not None and self.popen.returncode is not None:
            code = self.popen.returncode
            if code < 0:
                with contextlib.suppress(ValueError):
                    return f"killed by {signal.Signals(-code).name}"
            return f"exited with status {code}"
        return "exited (status unknown: started by an earlier Sextant)"

    def view(self) -> UnitView:
        return UnitView(
            group=self.group,
            name=self.spec.name,
            component=self.spec.component,
            state=self.state(),
            pid=self.pid if self.alive() else None,
            reason=self.reason,
            restarts=self.restarts,
            since=time.monotonic() - self.state_since,
            job=self.spec.job,
        )

    def state(self) -> UnitState:
        if self.stopping:
            return UnitState.STOPPING
        if self.done:
            return UnitState.DONE
        if self.pid is not None:
            return UnitState.RUNNING if self.ready else UnitState.STARTING
        if self.next_start > 0:
            return UnitState.CRASHLOOP if self.crashes >= CRASHLOOP_AFTER else UnitState.BACKOFF
        return UnitState.WAITING

    def satisfied(self) -> bool:
        """Whether units that come after this one may start."""
        return self.done if self.spec.job else (self.ready and self.pid is not None)

    # --- pid files ------------------------------------------------------------------------

    def save(self) -> None:
        record = {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "fingerprint": self.fingerprint,
            "done": self.fingerprint if self.done else None,
            # Where this run's output starts, so that an adopting Sextant can still find the
            # line that says the process is ready.
            "log_offset": self.log_offset,
        }
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.pid_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.pid_file)

    def adopt(self) -> bool:
        """Take over the process a previous Sextant started, if it still runs as specified."""
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return False
        if record.get("fingerprint") != self.fingerprint:
            return False
        if self.spec.job and record.get("done") == self.fingerprint:
            self.done = True
            return True
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if not isinstance(pid, int) or ticks is None or process_start_ticks(pid) != ticks:
            return False
        self.pid, self.start_ticks = pid, int(ticks)
        self.started_at = time.monotonic()
        # Whether it is ready is probed again, reading its log from where this run began.
        offset = record.get("log_offset")
        self.log_offset = offset if isinstance(offset, int) else 0
        self._log_position, self._log_carry = self.log_offset, b""
        self.reason = "adopted; checking it is ready"
        return True

    def log_contains(self, pattern: str) -> bool:
        """Whether `pattern` appeared in the log since this run started (read incrementally)."""
        needle = pattern.encode()
        try:
            with open(self.spec.log_path, "rb") as handle:
                handle.seek(self._log_position)
                chunk = handle.read(1024 * 1024)
        except OSError:
            return False
        self._log_position += len(chunk)
        data = self._log_carry + chunk
        found = needle in data
        self._log_carry = data[-len(needle) :] if len(needle) > 0 else b""
        return found


def rotate_log(path: Path, max_bytes: int) -> bool:
    """Keep a process's log under `max_bytes`: copy it to `<log>.1` (the previous copy goes),
    then empty it. The process keeps its descriptor (opened for appending), so its next line
    starts the emptied file; the lines it wrote while the copy was made are added to the copy
    first. Returns whether the log was rotated."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= max_bytes:
        return False
    rotated = path.with_name(path.name + ".1")
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as copy, path.open("rb") as source:
        shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.write(source.read())  # what was written meanwhile
        copy.flush()
        os.truncate(path, 0)
    os.replace(temporary, rotated)
    return True


class Supervisor:
    """Keeps groups of units as desired; one monitor task on Sextant's event loop."""

    def __init__(self, tick: float = TICK, log_max_bytes: int | None = None) -> None:
        self.tick = tick
        self.units: dict[str, Unit] = {}
        # Each process's log is kept under this size (one rotated copy beside it); None: no cap.
        self.log_max_bytes = log_max_bytes
        self._rotated_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stops: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._monitor(), name="sextant-local-supervisor"
            )

    async def aclose(self) -> None:
        """Stop supervising; the processes keep running, for the next Sextant to adopt."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for stop in list(self._stops):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stop

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop every unit of every group (in reverse start order), then supervising."""
        groups = list(dict.fromkeys(u.group for u in self.units.values()))
        for group in reversed(groups):
            await self.stop_group(group, grace=grace)
        await self.aclose()

    # --- desired state ------------------------------------------------------------------------

    def ensure(self, group: str, specs: Sequence[ProcessSpec], run_dir: Path) -> int:
        """Make `specs` the group's units; returns how many units were added, changed or removed.

        New units adopt their running process when a pid file matches, else they start when
        their dependencies allow. A unit whose spec changed is restarted; units that are no
        longer wanted are stopped in the background (with their grace period).
        """
        changes = 0
        wanted = {spec.name for spec in specs}
        for unit in [u for u in self.units.values() if u.group == group]:
            if unit.spec.name not in wanted and not unit.stopping:
                self.stop_in_background(group, unit.spec.name)
                changes += 1
        for spec in specs:
            key = f"{group}:{spec.name}"
            current = self.units.get(key)
            if current is not None and current.stopping:
                # Still leaving (a warm shutdown): a replacement starts once it has gone.
                continue
            if current is not None and current.fingerprint == spec.fingerprint():
                current.spec = spec  # same process; titles or grace may have changed
                continue
            unit = Unit(group, spec, run_dir / f"{spec.name}.json")
            if current is not None:
                self.units[key] = unit
                self._replace(current, unit)
                changes += 1
                continue
            self.units[key] = unit
            if unit.adopt():
                logger.info("adopted %s (pid %s)", key, unit.pid)
                if unit.done:
                    unit.state_since = time.monotonic()
            else:
                changes += 1
        return changes

    def _replace(self, old: Unit, new: Unit) -> None:
        # Stop the old process (not tracked any more), then let the monitor start the new one.
        new.next_start = float("inf")
        new.reason = "restarting: its configuration changed"

        async def swap() -> None:
            await self._stop_unit(old)
            new.next_start = 0.0

        self._spawn(swap())

    def stop_in_background(self, group: str, name: str, grace: float | None = None) -> None:
        """Stop one unit without waiting (a worker's warm shutdown may take minutes)."""
        unit = self.units.get(f"{group}:{name}")
        if unit is None or unit.stopping:
            return
        unit.stopping = True

        async def stop() -> None:
            await self._stop_unit(unit, grace)
            if self.units.get(unit.key) is unit:
                del self.units[unit.key]
            with contextlib.suppress(FileNotFoundError):
                unit.pid_file.unlink()

        self._spawn(stop())

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def stop_group(self, group: str, grace: float | None = None) -> int:
        """Stop every unit of a group and forget the group.

        Units stop in waves, in parallel within a wave: first those nothing else in the group
        comes after (the Airflow components), then what they needed (PgBouncer, Redis, ...).
        """
        members = [u for u in self.units.values() if u.group == group]
        for unit in members:
            unit.stopping = True
        remaining = list(members)
        while remaining:
            needed = {
                dependency
                for unit in remaining
                for dependency in unit.spec.after
                if ":" not in dependency
            }
            wave = [u for u in remaining if u.spec.name not in needed] or remaining
            await asyncio.gather(*(self._stop_unit(unit, grace) for unit in wave))
            for unit in wave:
                self.units.pop(unit.key, None)
                with contextlib.suppress(FileNotFoundError):
                    unit.pid_file.unlink()
            remaining = [u for u in remaining if u not in wave]
        return len(members)

    async def wait_stopping(self, group: str) -> None:
        """Wait until no unit of `group` is still on its way out."""
        while any(u.group == group and u.stopping for u in self.units.values()):
            await asyncio.sleep(self.tick)

    def views(self, group: str) -> list[UnitView]:
        """Every unit of a group, in declared order."""
        return [u.view() for u in self.units.values() if u.group == group]

    def unit(self, group: str, name: str) -> Unit | None:
        return self.units.get(f"{group}:{name}")

    def groups(self) -> list[str]:
        return list(dict.fromkeys(u.group for u in self.units.values()))

    # --- the monitor --------------------------------------------------------------------------

    async def _monitor(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the supervisor must outlive any one unit's surprise
                logger.exception("local supervisor step failed")
            await asyncio.sleep(self.tick)

    async def step(self) -> None:
        """One pass: notice exits, probe readiness, start what may start."""
        now = time.monotonic()
        probes: list[Awaitable[None]] = []
        for unit in list(self.units.values()):
            if unit.stopping or unit.done:
                continue
            if unit.pid is not None:
                if unit.alive():
                    if not unit.ready:
                        probes.append(self._probe(unit))
                    elif unit.crashes and now - unit.started_at > STABLE_AFTER:
                        unit.crashes, unit.reason = 0, ""
                    continue
                self._exited(unit, now)
                if unit.done:
                    continue
            if unit.next_start <= now and self._dependencies_met(unit):
                self._start(unit)
        if probes:
            await asyncio.gather(*probes)
        if self.log_max_bytes is not None and now - self._rotated_at >= ROTATE_EVERY:
            self._rotated_at = now
            await asyncio.to_thread(self.rotate_logs)

    def rotate_logs(self) -> list[str]:
        """Rotate every unit's log that outgrew the cap; returns the units rotated."""
        if self.log_max_bytes is None:
            return []
        rotated = []
        for unit in list(self.units.values()):
            try:
                if rotate_log(Path(unit.spec.log_path), self.log_max_bytes):
                    rotated.append(unit.key)
            except OSError as exc:
                logger.warning("rotating %s failed: %s", unit.spec.log_path, exc)
        return rotated

    def _dependencies_met(self, unit: Unit) -> bool:
        for dependency in unit.spec.after:
            key = dependency if ":" in dependency else f"{unit.group}:{dependency}"
            other = self.units.get(key)
            if other is None or not other.satisfied():
                if unit.pid is None and unit.next_start == 0:
                    what = other.spec.title or other.spec.name if other else dependency
                    unit.reason = f"waiting for {what}"
                return False
        return True

    def _exited(self, unit: Unit, now: float) -> None:
        status = unit.exit_status()
        ran = now - unit.started_at
        unit.pid, unit.popen, unit.start_ticks = None, None, None
        if unit.spec.job and status == "exited with status 0":
            unit.done, unit.ready, unit.crashes, unit.reason = True, True, 0, ""
            unit.state_since = now
            unit.save()
            logger.info("%s finished", unit.key)
            return
        unit.crashes += 1
        unit.ready = False
        wait = backoff(unit.crashes)
        unit.next_start = now + wait
        unit.state_since = now
        last = _last_line(unit.spec.log_path)
        unit.reason = (
            f"{status} after {ran:.0f} s; restart {unit.restarts + 1} in {wait:.0f} s"
            + (f"; last log line: {last}" if last else "")
            + f" (log: {unit.spec.log_path})"
        )
        logger.warning("%s %s", unit.key, unit.reason)
        unit.save()

    def _start(self, unit: Unit) -> None:
        spec = unit.spec
        if unit.next_start > 0:
            unit.restarts += 1
        unit.next_start = 0.0
        Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        account = _account(spec.run_as)
        with open(spec.log_path, "ab") as log:
            log.write(
                f"=== sextant {time.strftime('%Y-%m-%dT%H:%M:%S')}: starting {spec.name}"
                f" (restart {unit.restarts}): {' '.join(spec.argv)}\n".encode()
            )
            log.flush()
            unit.log_offset = log.tell()
            try:
                unit.popen = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(spec.env),
                    cwd=spec.cwd,
                    start_new_session=True,
                    close_fds=True,
                    user=account.pw_uid if account else None,
                    group=account.pw_gid if account else None,
                    extra_groups=[] if account else None,
                )
            except OSError as exc:
                unit.popen = None
                unit.crashes += 1
                wait = backoff(unit.crashes)
                unit.next_start = time.monotonic() + wait
                unit.reason = f"cannot start {spec.argv[0]}: {exc.strerror or exc}"
                logger.warning("%s %s", unit.key, unit.reason)
                return
        unit.pid = unit.popen.pid
        unit.start_ticks = process_start_ticks(unit.pid)
        unit.started_at = unit.state_since = time.monotonic()
        unit.ready = False
        unit._log_position, unit._log_carry = unit.log_offset, b""
        unit.reason = "running" if spec.job else f"waiting for {spec.readiness.describe()}"
        unit.save()
        logger.info("started %s (pid %s)", unit.key, unit.pid)

    async def _probe(self, unit: Unit) -> None:
        readiness = unit.spec.readiness
        ready: bool
        if unit.spec.job:  # done when it exits 0
            unit.reason = f"running ({time.monotonic() - unit.started_at:.0f} s)"
            return
        if readiness.kind is ReadyKind.TCP:
            ready = await tcp_ready(HOST, readiness.port, PROBE_TIMEOUT) is None
        elif readiness.kind is ReadyKind.HTTP:
            ready = await http_ready(readiness.url, "", PROBE_TIMEOUT) is None
        elif readiness.kind is ReadyKind.LOG:
            ready = unit.log_contains(readiness.pattern)
        else:
            ready = time.monotonic() - unit.started_at >= readiness.seconds
        if ready and unit.alive():
            unit.ready = True
            unit.state_since = time.monotonic()
            if not unit.crashes:
                unit.reason = ""
            logger.info("%s is ready", unit.key)
        elif not ready:
            waited = time.monotonic() - unit.started_at
            unit.reason = f"waiting for {readiness.describe()} ({waited:.0f} s)"

    async def _stop_unit(self, unit: Unit, grace: float | None = None) -> None:
        unit.stopping = True
        pid = unit.pid
        grace = unit.spec.stop_grace if grace is None else grace
        if pid is not None and unit.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, unit.spec.stop_signal)
            deadline = time.monotonic() + grace
            while unit.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if unit.alive():
                logger.warning("%s still running after %.0f s: killing it", unit.key, grace)
                _signal_group(pid, signal.SIGKILL)
                for _ in range(50):
                    if not unit.alive():
                        break
                    await asyncio.sleep(0.1)
        if pid is not None:
            # Children the leader left behind (pool processes, task runners).
            if group_alive(pid):
                _signal_group(pid, signal.SIGTERM)
                for _ in range(30):
                    if not group_alive(pid):
                        break
                    await asyncio.sleep(0.1)
                _signal_group(pid, signal.SIGKILL)
        if unit.popen is not None:
            with contextlib.suppress(Exception):
                unit.popen.wait(timeout=5)
        unit.pid, unit.popen, unit.start_ticks, unit.ready = None, None, None, False
        unit.state_since = time.monotonic()


def _account(name: str | None) -> pwd.struct_passwd | None:
    """The account to switch to: only when running as root and one is named."""
    if name is None or os.geteuid() != 0:
        return None
    return pwd.getpwnam(name)


async def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    progress: Callable[[float], None] | None = None,
    interval: float = 0.5,
) -> bool:
    """Poll `condition` until it holds or `timeout` passes; `progress(elapsed)` each poll."""
    started = time.monotonic()
    while True:
        if condition():
            return True
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            return False
        if progress is not None:
            progress(elapsed)
        await asyncio.sleep(interval)


def specs_to_json(specs: Iterable[ProcessSpec]) -> list[dict[str, Any]]:
    """Serialize specs for the deployment's state file."""
    return [spec.to_json() for spec in specs]


def specs_from_json(data: Iterable[Mapping[str, Any]]) -> list[ProcessSpec]:
    """Read specs back from a deployment's state file."""
    return [ProcessSpec.from_json(item) for item in data]
