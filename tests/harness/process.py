"""Run one real server (PostgreSQL, Prometheus, ...) as a child process for the tests.

Every component the tests start needs the same things: a free port on 127.0.0.1, a log file,
a readiness check with a deadline, and a stop that never leaves a process behind. Tests of
outages also stop a component and start it again on the same port, mid-test.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import pwd
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_LINES = 60

# Below Linux's ephemeral range (32768-60999 by default), so an outgoing connection cannot take
# the port between the check here and the component binding it.
_PORT_RANGE = (20000, 32000)
# Ports handed out by this process: a component may not have bound its port yet when the
# next one asks for one.
_handed_out: set[int] = set()

ReadinessCheck = Callable[[], bool]


class ComponentStartError(RuntimeError):
    """A component exited or did not become ready; the message ends with its log tail."""


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account that a component runs under when the tests run as root."""

    user: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        """Find the account by name; raises KeyError when it does not exist."""
        entry = pwd.getpwnam(user)
        return cls(user=user, uid=entry.pw_uid, gid=entry.pw_gid)

    def give(self, path: Path) -> None:
        """Make the account the owner of `path` (not recursive)."""
        os.chown(path, self.uid, self.gid)


def free_port(*, udp: bool = False) -> int:
    """Return a 127.0.0.1 port that is free for TCP (and UDP when asked) and not yet handed out."""
    for _ in range(500):
        port = random.randint(*_PORT_RANGE)
        if port in _handed_out:
            continue
        if _can_bind(port, socket.SOCK_STREAM) and (not udp or _can_bind(port, socket.SOCK_DGRAM)):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {_PORT_RANGE}")


def _can_bind(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        # Servers set SO_REUSEADDR too, so a port whose old connections linger in TIME_WAIT
        # (typically after a restart) still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str, accept: Callable[[bytes], bool] | None = None) -> ReadinessCheck:
    """A readiness check: GET `url` answers 200 (and `accept(body)` holds, when given)."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return False
        return accept is None or accept(body)

    return check


def tcp_accepts(port: int, host: str = "127.0.0.1") -> ReadinessCheck:
    """A readiness check: a TCP connection to host:port succeeds."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    return check


class ManagedProcess:
    """A component's server process: start and wait until ready, stop, restart on the same port."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        ready: ReadinessCheck,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: RunAs | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = log_path
        self.ready = ready
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.run_as = run_as
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, log={str(self.log_path)!r})"

    @property
    def pid(self) -> int | None:
        """The process id while the process runs, else None."""
        return self._popen.pid if self.running and self._popen is not None else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        """Start the process and block until it is ready; raises ComponentStartError."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        # Append, so that the log of a restarted component keeps what happened before.
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== harness: starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # Own process group, so that stop() can also reach the component's children.
                start_new_session=True,
                user=self.run_as.uid if self.run_as else None,
                group=self.run_as.gid if self.run_as else None,
                extra_groups=[] if self.run_as else None,
                preexec_fn=_die_with_parent if _in_main_thread() else None,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            # Not ready, a failing check or Ctrl-C: nobody will get a handle to stop it later.
            self.stop()
            raise

    def stop(self) -> None:
        """Stop with `stop_signal`, SIGKILL after `stop_timeout`; no-op when not running."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            _signal_process(popen.pid, self.stop_signal)
            try:
                popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
        self._reap()

    def kill(self) -> None:
        """Kill the whole process group with SIGKILL at once, as a crash would."""
        popen = self._popen
        if popen is None:
            return
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait()
        self._reap()

    def restart(self) -> None:
        """Stop, then start again with the same arguments (and so the same ports)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the component's log."""
        try:
            with open(self.log_path, "rb") as log:
                # Logs of long-lived components grow; reading the end is enough.
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 256 * 1024))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_until_ready(self) -> None:
        assert self._popen is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                raise ComponentStartError(
                    self._failure(f"exited with status {code} before it was ready")
                )
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise ComponentStartError(self._failure(f"not ready after {self.start_timeout:g}s"))
            time.sleep(0.1)

    def _reap(self) -> None:
        # Children the leader did not take down with it (or that outlived a SIGKILL of the leader).
        if self._popen is not None:
            _signal_group(self._popen.pid, signal.SIGKILL)
        self._popen = None

    def _failure(self, what: str) -> str:
        return (
            f"{self.name} {what}.\ncommand: {' '.join(self.argv)}\n"
            f"last {LOG_TAIL_LINES} lines of {self.log_path}:\n{self.log_tail()}"
        )


def _signal_process(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    # Runs in the child before exec (after the switch to the component's account, which would
    # reset it): if pytest dies without stopping us, the kernel kills the component instead of
    # leaving it bound to its port. Linux delivers it when the forking *thread* exits, hence
    # only used from the main thread.
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
