"""ManagedProcess: readiness, failure messages, stop/kill/restart on the same port, no leftovers."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.harness.process import (
    ComponentStartError,
    ManagedProcess,
    free_port,
    http_ok,
    tcp_accepts,
)


def http_server(tmp_path: Path, port: int) -> ManagedProcess:
    """A stand-in component: Python's HTTP server on `port`."""
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    return ManagedProcess(
        "http.server",
        argv,
        log_path=tmp_path / "http.log",
        ready=http_ok(f"http://127.0.0.1:{port}/"),
        cwd=tmp_path,
    )


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting for a parent that will not reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_file(path: Path, timeout: float = 10) -> str:
    """Content of `path` once it exists and is not empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def test_free_port_hands_out_distinct_bindable_ports() -> None:
    ports = [free_port(udp=True) for _ in range(20)]

    assert len(set(ports)) == 20
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_start_returns_once_ready_and_stop_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    process = http_server(tmp_path, port)

    process.start()
    assert tcp_accepts(port)()
    process.stop()

    assert not process.running
    assert not tcp_accepts(port)()


def test_restart_serves_again_on_the_same_port(tmp_path: Path) -> None:
    port = free_port()
    process = http_server(tmp_path, port)
    process.start()
    first_pid = process.pid

    process.kill()
    assert not tcp_accepts(port)()
    process.start()

    try:
        assert process.pid != first_pid
        assert http_ok(f"http://127.0.0.1:{port}/")()
        # The log keeps both runs, so a failure after a restart still shows the first one.
        assert process.log_path.read_text().count("=== harness: starting") == 2
    finally:
        process.stop()


def test_exit_before_ready_raises_with_the_log_tail(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('config is broken', flush=True); raise SystemExit(3)"]
    process = ManagedProcess("broken", argv, log_path=tmp_path / "broken.log", ready=lambda: False)

    with pytest.raises(ComponentStartError) as error:
        process.start()

    assert "broken exited with status 3 before it was ready" in str(error.value)
    assert "config is broken" in str(error.value)


def test_not_ready_by_the_deadline_raises_and_stops_the_process(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('still booting', flush=True); time.sleep(60)"]
    process = ManagedProcess(
        "slow", argv, log_path=tmp_path / "slow.log", ready=lambda: False, start_timeout=1
    )

    with pytest.raises(ComponentStartError, match="slow not ready after 1s") as error:
        process.start()

    assert "still booting" in str(error.value)
    assert not process.running


def test_stop_escalates_to_sigkill_and_takes_the_children_along(tmp_path: Path) -> None:
    # A component that ignores SIGTERM and has a child of its own.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    process = ManagedProcess(
        "stubborn",
        [sys.executable, "-c", script],
        log_path=tmp_path / "stubborn.log",
        ready=lambda: (tmp_path / "child.pid").exists(),
        stop_timeout=0.5,
    )
    process.start()
    leader = process.pid
    child = int(wait_for_file(tmp_path / "child.pid"))
    assert leader is not None
    assert alive(leader)
    assert alive(child)

    started = time.monotonic()
    process.stop()

    assert time.monotonic() - started < 5
    assert not alive(leader)
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_stop_and_kill_are_harmless_when_not_running(tmp_path: Path) -> None:
    process = http_server(tmp_path, free_port())

    process.stop()
    process.kill()

    assert not process.running
    assert process.pid is None


def test_a_failing_readiness_check_stops_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )

    def broken_check() -> bool:
        if pid_file.exists() and pid_file.read_text():
            raise ValueError("bug in the readiness check")
        return False

    process = ManagedProcess(
        "probed",
        [sys.executable, "-c", script],
        log_path=tmp_path / "probed.log",
        ready=broken_check,
    )

    with pytest.raises(ValueError, match="bug in the readiness check"):
        process.start()

    assert not alive(int(pid_file.read_text()))
