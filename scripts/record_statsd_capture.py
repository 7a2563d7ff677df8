#!/usr/bin/env python3
"""Record the StatsD traffic a real Apache Airflow 3 instance emits.

The capture is a fixture: a later test replays it through a real statsd_exporter into a real
Prometheus to check Sextant's mapping and alert rules against the metrics a real Airflow sends.

What it does:

1. Makes sure the Airflow virtual environment exists (``scripts/airflow-env.sh``; it lives
   outside the repository under ``${SEXTANT_TOOLS_DIR:-${XDG_CACHE_HOME:-~/.cache}/sextant}``).
2. Opens a UDP listener on 127.0.0.1:<free port> and records every StatsD line with its arrival
   time relative to the listener start (``<seconds.mmm>\\t<raw line>``; a datagram holding several
   newline-separated metrics is split into lines).
3. Starts a throw-away PostgreSQL 15 cluster and Redis (CeleryExecutor) in a temp dir, runs
   ``airflow db migrate`` and starts api-server, scheduler, dag-processor, triggerer and a
   Celery worker, all on 127.0.0.1 and configured by environment variables only.
4. Creates the ``sextant_small`` pool, unpauses the sample DAGs from ``tests/fixtures/dags`` and
   triggers runs through the REST API, lets everything run for ``--duration`` seconds
   (re-triggering half way), stops every process (SIGTERM, then SIGKILL, by process group) and
   checks nothing it started is left running.
5. Writes the capture (``tests/fixtures/statsd/airflow-<version>-<executor>.statsd``) and a
   README next to it, and prints a summary (datagrams, distinct metric names and their types).

Python 3.11 standard library only. Run as root (PostgreSQL then runs as the ``postgres`` user)
or as an ordinary user. Needs ``uv`` (for the venv), ``redis-server`` and PostgreSQL 15
(``apt-get install redis-server postgresql``).

Usage::

    python3 scripts/record_statsd_capture.py --duration 270
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VERSION = "3.3.2"
DAGS_DIR = REPO / "tests" / "fixtures" / "dags"
OUT_DIR = REPO / "tests" / "fixtures" / "statsd"
PG_BIN = Path(os.environ.get("SEXTANT_PG_BIN", "/usr/lib/postgresql/15/bin"))
PREFIX = "airflow"
SMALL_POOL = ("sextant_small", 2)
# DAG ids in tests/fixtures/dags (broken_syntax.py is expected to fail to import).
SCHEDULED_DAGS = ["sextant_every_minute", "sextant_deferrable"]
MANUAL_DAGS = ["sextant_parallel", "sextant_failing", "sextant_deferrable"]
ALL_DAGS = ["sextant_every_minute", "sextant_parallel", "sextant_failing", "sextant_deferrable"]

# (label, regex on the metric name without the prefix). Checked after the recording.
EXPECTED = [
    ("scheduler_heartbeat", r"scheduler_heartbeat"),
    ("dag_processor_heartbeat", r"dag_processor_heartbeat"),
    ("triggerer_heartbeat", r"triggerer_heartbeat"),
    ("executor.open_slots[.*]", r"executor\.open_slots(\..+)?"),
    ("executor.queued_tasks[.*]", r"executor\.queued_tasks(\..+)?"),
    ("executor.running_tasks[.*]", r"executor\.running_tasks(\..+)?"),
    ("pool.open_slots.<pool>", r"pool\.open_slots\..+"),
    ("pool.queued_slots.<pool>", r"pool\.queued_slots\..+"),
    ("pool.running_slots.<pool>", r"pool\.running_slots\..+"),
    ("pool.deferred_slots.<pool>", r"pool\.deferred_slots\..+"),
    ("pool.scheduled_slots.<pool>", r"pool\.scheduled_slots\..+"),
    ("pool.starving_tasks.<pool>", r"pool\.starving_tasks\..+"),
    ("dagrun.schedule_delay.<dag>", r"dagrun\.schedule_delay\..+"),
    ("dagrun.<dag>.first_task_scheduling_delay", r"dagrun\..+\.first_task_scheduling_delay"),
    ("ti.finish.<dag>.<task>.success", r"ti\.finish\..+\.success"),
    ("ti.finish.<dag>.<task>.failed", r"ti\.finish\..+\.failed"),
    ("ti_failures", r"ti_failures"),
    ("operator_failures[_<op>]", r"operator_failures(_.+)?"),
    ("dag_processing.import_errors", r"dag_processing\.import_errors"),
    ("triggerer.capacity_left.<host>", r"triggerer\.capacity_left\..+"),
    ("triggers.running.<host>", r"triggers\.running\..+"),
    ("dag.<dag>.<task>.scheduled_duration", r"dag\..+\..+\.scheduled_duration"),
    ("dag.<dag>.<task>.queued_duration", r"dag\..+\..+\.queued_duration"),
    ("task.scheduled_duration", r"task\.scheduled_duration"),
    ("task.queued_duration", r"task\.queued_duration"),
]


def log(msg: str) -> None:
    print(f"[record {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# StatsD listener
# --------------------------------------------------------------------------------------------
class StatsdRecorder(threading.Thread):
    """Receive UDP datagrams on 127.0.0.1 and keep (relative time, line) pairs."""

    def __init__(self) -> None:
        super().__init__(name="statsd-recorder", daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.datagrams = 0
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                break
            t = time.monotonic() - self.t0
            text = data.decode("utf-8", errors="replace")
            with self.lock:
                self.datagrams += 1
                for line in text.split("\n"):
                    line = line.strip("\r")
                    if line:
                        self.lines.append((t, line))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.sock.close()

    def snapshot(self) -> tuple[int, list[tuple[float, str]]]:
        with self.lock:
            return self.datagrams, list(self.lines)


def parse_line(line: str) -> tuple[str, str] | None:
    """Return (name, type) of a StatsD line ``name:value|type[|@rate]``."""
    name, sep, rest = line.partition(":")
    if not sep:
        return None
    parts = rest.split("|")
    if len(parts) < 2:
        return None
    return name, parts[1]


def metric_types(lines: list[tuple[float, str]]) -> dict[str, set[str]]:
    types: dict[str, set[str]] = collections.defaultdict(set)
    for _, line in lines:
        parsed = parse_line(line)
        if parsed:
            types[parsed[0]].add(parsed[1])
    return dict(sorted(types.items()))


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------
class Procs:
    """Every long-running process we start, each in its own session / process group."""

    def __init__(self, logdir: Path, marker: str) -> None:
        self.logdir = logdir
        self.marker = marker
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        logfile = open(self.logdir / f"{name}.log", "ab")
        env = {**env, "SEXTANT_RECORDER_RUN": self.marker}
        p = subprocess.Popen(
            argv,
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
        logfile.close()
        self.procs.append((name, p))
        log(f"started {name} (pid {p.pid}): {' '.join(argv[:3])} ...")
        return p

    def check_alive(self) -> list[str]:
        return [f"{n} (exit {p.returncode})" for n, p in self.procs if p.poll() is not None]

    def stop(self, names: list[str], grace: float) -> None:
        """SIGTERM the leaders of ``names`` (graceful shutdown), then their whole process groups.

        The leader is signalled first so that, e.g., the Celery worker does a warm shutdown and
        lets running task processes finish instead of having SIGTERM hit them directly. Whatever
        is still alive after ``grace`` seconds gets SIGTERM on its process group, then SIGKILL.
        """
        targets = [(n, p) for n, p in self.procs if n in names]
        for n, p in targets:
            if p.poll() is None:
                log(f"SIGTERM {n} (pid {p.pid})")
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for n, p in targets:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
                log(f"{n} exited ({p.returncode})")
            except subprocess.TimeoutExpired:
                log(f"{n} still running after {grace:.0f}s: SIGTERM to process group {p.pid}")
                _killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log(f"{n}: SIGKILL to process group {p.pid}")
                    _killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
        # Children (task processes, uvicorn/celery children) may outlive their leader.
        for n, p in targets:
            if _pg_alive(p.pid):
                log(f"process group of {n} still has members: SIGTERM")
                _killpg(p.pid, signal.SIGTERM)
                time.sleep(3)
                if _pg_alive(p.pid):
                    log(f"process group of {n} still has members: SIGKILL")
                    _killpg(p.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pg_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def marked_pids(marker: str) -> list[int]:
    """PIDs whose environment carries our run marker (anything we started, however deep)."""
    needle = f"SEXTANT_RECORDER_RUN={marker}".encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(d))
        except OSError:
            continue
    return found


def sweep(marker: str) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
        pids = marked_pids(marker)
        if not pids:
            return
        log(f"leftover processes {pids}: {signal.Signals(sig).name}")
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(wait)
    left = marked_pids(marker)
    if left:
        log(f"WARNING: processes still running after SIGKILL: {left}")


def wait_for(what: str, check, timeout: float, procs: Procs | None = None, interval: float = 1.0):
    log(f"waiting for {what} (up to {timeout:.0f}s)")
    deadline = time.monotonic() + timeout
    last_err: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last_err = e
        if procs is not None:
            dead = procs.check_alive()
            if dead:
                raise RuntimeError(f"while waiting for {what}: process exited: {', '.join(dead)}")
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last_err!r})")


# --------------------------------------------------------------------------------------------
# PostgreSQL and Redis
# --------------------------------------------------------------------------------------------
class Postgres:
    def __init__(self, workdir: Path, port: int, logdir: Path, env: dict[str, str]) -> None:
        self.dir = workdir / "pg"
        self.port = port
        self.logfile = logdir / "postgres.log"
        self.env = env
        self.user_kw: dict = {}
        if os.geteuid() == 0:
            # initdb/postgres refuse to run as root.
            pw = pwd.getpwnam("postgres")
            self.user_kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self.env = {**env, "HOME": pw.pw_dir, "USER": "postgres", "LOGNAME": "postgres"}
        self.started = False

    def _run(self, argv: list[str]) -> None:
        r = subprocess.run(
            argv, env=self.env, cwd=self.dir, capture_output=True, text=True, **self.user_kw
        )
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

    def start(self) -> None:
        self.dir.mkdir()
        self.logfile.touch()
        if self.user_kw:
            os.chown(self.dir, self.user_kw["user"], self.user_kw["group"])
            os.chown(self.logfile, self.user_kw["user"], self.user_kw["group"])
        log(f"initdb PostgreSQL cluster in {self.dir}/data (port {self.port})")
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-l",
                str(self.logfile),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self.started = True
        self._run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "airflow",
            ]
        )
        log("PostgreSQL is up, database 'airflow' created")

    def stop(self) -> None:
        if not self.started:
            return
        log("stopping PostgreSQL")
        try:
            self._run(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]
            )
        except Exception as e:  # noqa: BLE001
            log(f"pg_ctl stop failed: {e}")
            pidfile = self.dir / "data" / "postmaster.pid"
            if pidfile.exists():
                pid = int(pidfile.read_text().split()[0])
                try:
                    os.kill(pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
        self.started = False


def redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


# --------------------------------------------------------------------------------------------
# Airflow REST API (SimpleAuthManager with all users admin: GET /auth/token needs no password)
# --------------------------------------------------------------------------------------------
class Api:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.token: str | None = None

    def call(
        self, method: str, path: str, body: object | None = None, timeout: float = 30
    ) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def login(self) -> None:
        status, body = self.call("GET", "/auth/token")
        if status not in (200, 201) or not isinstance(body, dict):
            raise RuntimeError(f"GET /auth/token -> {status} {body}")
        self.token = body["access_token"]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def ensure_venv(version: str, venv: str | None) -> Path:
    if venv:
        path = Path(venv)
    else:
        log(f"ensuring Airflow {version} venv via scripts/airflow-env.sh")
        r = subprocess.run(
            ["bash", str(REPO / "scripts" / "airflow-env.sh"), version],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        path = Path(r.stdout.strip().splitlines()[-1])
    got = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import airflow; print(airflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if got != version:
        raise SystemExit(f"{path} holds airflow {got}, expected {version}")
    log(f"using {path} (apache-airflow {got})")
    return path


def airflow_env(args, workdir: Path, ports: dict[str, int], statsd_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    pg = f"postgres@127.0.0.1:{ports['postgres']}/airflow"
    api = f"http://127.0.0.1:{ports['api']}"
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow_home"),
            "PYTHONDONTWRITEBYTECODE": "1",  # keep __pycache__ out of tests/fixtures/dags
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"
            if args.executor == "celery"
            else "LocalExecutor",
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports["api"]),
            "AIRFLOW__API__BASE_URL": f"{api}/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": base64.b64encode(os.urandom(16)).decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": base64.b64encode(os.urandom(64)).decode(),
            # Metrics: plain StatsD to our listener.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
            "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX,
            # Shorter intervals so metrics appear sooner.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__POOL_METRICS_INTERVAL": "5",
            # 3.2+ name of [scheduler] running_metrics_interval (the old name is deprecated).
            "AIRFLOW__SCHEDULER__TI_METRICS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__DAGRUN_METRICS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            # Log servers are skipped with --skip-serve-logs; free loopback ports as a second guard.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
        }
    )
    if args.executor == "celery":
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(args.worker_concurrency),
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            }
        )
    else:
        env["AIRFLOW__CORE__PARALLELISM"] = str(args.worker_concurrency)
    return env


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def run_airflow(args) -> tuple[StatsdRecorder, dict]:
    """Run the whole instance; returns the (stopped) recorder and run facts."""
    venv = ensure_venv(args.airflow_version, args.venv)
    airflow = str(venv / "bin" / "airflow")
    workdir = Path(tempfile.mkdtemp(prefix="sextant-statsd-"))
    os.chmod(workdir, 0o755)  # the postgres user must reach workdir/pg
    logdir = workdir / "logs"
    logdir.mkdir()
    marker = f"{os.getpid()}-{time.time_ns()}"
    procs = Procs(logdir, marker)
    ports = {k: free_port() for k in ("postgres", "redis", "api", "worker_logs", "trigger_logs")}
    log(f"workdir {workdir}; ports {ports}")
    facts: dict = {"workdir": str(workdir), "venv": str(venv)}

    recorder = StatsdRecorder()
    env = airflow_env(args, workdir, ports, recorder.port)
    pg = Postgres(workdir, ports["postgres"], logdir, {**env, "SEXTANT_RECORDER_RUN": marker})
    ok = False
    try:
        pg.start()
        if args.executor == "celery":
            (workdir / "redis").mkdir()
            procs.start(
                "redis",
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(ports["redis"]),
                    "--dir",
                    str(workdir / "redis"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                env,
            )
            wait_for("redis", lambda: redis_ping(ports["redis"]), 30, procs, 0.3)

        recorder.start()
        log(f"StatsD listener on 127.0.0.1:{recorder.port} (t=0)")
        log("airflow db migrate")
        with open(logdir / "db-migrate.log", "wb") as f:
            r = subprocess.run(
                [airflow, "db", "migrate"],
                env={**env, "SEXTANT_RECORDER_RUN": marker},
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        if r.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{tail(logdir / 'db-migrate.log')}")
        facts["migrated_at"] = time.monotonic() - recorder.t0
        log(f"db migrated at t={facts['migrated_at']:.1f}s")

        procs.start(
            "api-server",
            [
                airflow,
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["api"]),
                "--workers",
                "1",
            ],
            env,
        )
        procs.start("scheduler", [airflow, "scheduler", "--skip-serve-logs"], env)
        procs.start("dag-processor", [airflow, "dag-processor"], env)
        procs.start("triggerer", [airflow, "triggerer", "--skip-serve-logs"], env)
        if args.executor == "celery":
            procs.start(
                "celery-worker",
                [
                    airflow,
                    "celery",
                    "worker",
                    "--skip-serve-logs",
                    "--concurrency",
                    str(args.worker_concurrency),
                    "--without-gossip",
                    "--without-mingle",
                ],
                env,
            )
        t_start = time.monotonic()
        facts["components_started_at"] = t_start - recorder.t0

        api = Api(f"http://127.0.0.1:{ports['api']}")

        def healthy():
            status, body = api.call("GET", "/api/v2/monitor/health", timeout=5)
            return (
                status == 200
                and isinstance(body, dict)
                and body.get("metadatabase", {}).get("status") == "healthy"
            )

        wait_for("api-server /api/v2/monitor/health", healthy, 240, procs, 2)
        api.login()
        status, body = api.call(
            "POST",
            "/api/v2/pools",
            {
                "name": SMALL_POOL[0],
                "slots": SMALL_POOL[1],
                "description": "sextant statsd capture",
                "include_deferred": False,
            },
        )
        log(f"create pool {SMALL_POOL[0]} ({SMALL_POOL[1]} slots): HTTP {status}")
        if status not in (200, 201, 409):
            raise RuntimeError(f"creating pool failed: {status} {body}")

        def dags_parsed():
            return all(api.call("GET", f"/api/v2/dags/{d}", timeout=5)[0] == 200 for d in ALL_DAGS)

        wait_for(f"DAGs {ALL_DAGS} to be parsed by the dag-processor", dags_parsed, 240, procs, 3)
        if args.executor == "celery":
            wait_for(
                "celery worker ready",
                lambda: b"ready." in (logdir / "celery-worker.log").read_bytes(),
                120,
                procs,
                2,
            )
        status, body = api.call("GET", "/api/v2/importErrors")
        if status == 200 and isinstance(body, dict):
            files = [Path(e.get("filename", "?")).name for e in body.get("import_errors", [])]
            log(f"import errors reported by the API: {body.get('total_entries')} {files}")
        for d in ALL_DAGS:
            status, _ = api.call("PATCH", f"/api/v2/dags/{d}", {"is_paused": False})
            log(f"unpause {d}: HTTP {status}")

        def trigger(round_no: int) -> None:
            for d in MANUAL_DAGS:
                status, body = api.call("POST", f"/api/v2/dags/{d}/dagRuns", {"logical_date": None})
                run_id = body.get("dag_run_id") if isinstance(body, dict) else body
                log(f"trigger {d} (round {round_no}): HTTP {status} {run_id}")

        trigger(1)
        facts["triggered_at"] = time.monotonic() - recorder.t0
        retriggered = False
        next_progress = time.monotonic()
        end = t_start + args.duration
        while time.monotonic() < end:
            now = time.monotonic()
            dead = procs.check_alive()
            if dead:
                raise RuntimeError(f"process exited early: {', '.join(dead)}")
            if not retriggered and now >= t_start + args.duration / 2:
                trigger(2)
                retriggered = True
            if now >= next_progress:
                n_dgrams, lines = recorder.snapshot()
                log(
                    f"t={now - recorder.t0:6.1f}s  {n_dgrams} datagrams, "
                    f"{len(metric_types(lines))} distinct "
                    f"names, {end - now:5.0f}s left"
                )
                next_progress = now + 30
            time.sleep(1)
        ok = True
    except BaseException as e:
        log(f"ERROR: {e!r}")
        for n, _ in procs.procs:
            print(f"----- tail of {n}.log -----\n{tail(logdir / f'{n}.log')}", flush=True)
        raise
    finally:
        t_stop = time.monotonic()
        facts["stop_requested_at"] = t_stop - recorder.t0
        log(
            "stopping Airflow components (SIGTERM to each leader, "
            "process-group SIGTERM/SIGKILL after a grace period)"
        )
        # Order: stop scheduling first, let the Celery worker finish running tasks (they report to
        # the api-server), then the api-server, then the broker.
        started = {n for n, _ in procs.procs}
        for stage in (
            ["scheduler", "dag-processor", "triggerer"],
            ["celery-worker"],
            ["api-server"],
            ["redis"],
        ):
            if started & set(stage):
                procs.stop(stage, grace=args.grace)
        pg.stop()
        sweep(marker)
        time.sleep(0.5)
        if recorder.is_alive():
            recorder.stop()
        facts["stopped_at"] = time.monotonic() - recorder.t0
        log(f"all processes stopped at t={facts['stopped_at']:.1f}s")
        if args.keep_workdir or not ok:
            log(f"kept workdir with logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return recorder, facts


def write_capture(
    lines: list[tuple[float, str]], path: Path, max_bytes: int
) -> tuple[int, float | None]:
    """Write ``<t>\\t<line>`` rows, stopping before ``max_bytes``.

    Returns (rows written, cut-off time or None)."""
    out, size, cutoff = [], 0, None
    for t, line in lines:
        row = f"{t:.3f}\t{line}\n"
        if size + len(row) > max_bytes:
            cutoff = t
            break
        out.append(row)
        size += len(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out))
    return len(out), cutoff


def expected_report(
    types: dict[str, set[str]], lines: list[tuple[float, str]]
) -> list[tuple[str, bool, str]]:
    names = [n[len(PREFIX) + 1 :] if n.startswith(PREFIX + ".") else n for n in types]
    report = []
    for label, rx in EXPECTED:
        hits = [n for n in names if re.fullmatch(rx, n)]
        report.append((label, bool(hits), ", ".join(hits[:4]) + (" ..." if len(hits) > 4 else "")))
    ie = [
        float(line.split(":", 1)[1].split("|")[0])
        for _, line in lines
        if line.startswith(f"{PREFIX}.dag_processing.import_errors:")
    ]
    report.append(
        (
            "dag_processing.import_errors > 0",
            any(v > 0 for v in ie),
            f"values seen: {sorted(set(ie))}" if ie else "",
        )
    )
    return report


def compact_names(types: dict[str, set[str]]) -> list[str]:
    return [f"{n}|{','.join(sorted(t))}" for n, t in types.items()]


def write_readme(
    path: Path,
    args,
    version: str,
    facts: dict,
    n_dgrams: int,
    lines,
    capture: Path,
    rows: int,
    cutoff: float | None,
    types: dict[str, set[str]],
    report,
) -> None:
    dags = sorted(p.name for p in DAGS_DIR.glob("*.py"))
    executor = (
        "CeleryExecutor (Redis broker, PostgreSQL 15 metadata DB and result backend)"
        if args.executor == "celery"
        else "LocalExecutor (PostgreSQL 15 metadata DB)"
    )
    size = capture.stat().st_size
    cmd = f"python3 scripts/record_statsd_capture.py --duration {args.duration:g}"
    if args.executor != "celery":
        cmd += f" --executor {args.executor}"
    if args.airflow_version != DEFAULT_VERSION:
        cmd += f" --airflow-version {args.airflow_version}"
    worker_part = "and `airflow celery worker` " if args.executor == "celery" else ""
    trunc = (
        f"Truncated at t={cutoff:.3f} s to stay under {args.max_bytes} bytes."
        if cutoff is not None
        else "Not truncated."
    )
    tl = {
        k: f"{facts.get(k, 0):.0f}"
        for k in (
            "migrated_at",
            "components_started_at",
            "triggered_at",
            "stop_requested_at",
            "stopped_at",
        )
    }
    minutes = f"{(args.duration + 120) / 60:.0f}"
    present = [f"- [x] `{label}`" + (f" ({ex})" if ex else "") for label, ok, ex in report if ok]
    missing = [f"- [ ] `{label}`" for label, ok, _ in report if not ok]
    text = f"""# StatsD capture from a real Airflow {version}

`{capture.name}` is the StatsD traffic of a real Apache Airflow {version} instance, recorded by
`scripts/record_statsd_capture.py`. It is for replay tests: send the lines through a real
statsd_exporter into a real Prometheus and check the mapping and alert rules against metrics a
real Airflow emits. Nothing in it was written by hand.

## Format

One StatsD line per row: `<seconds since the listener started, 3 decimals>\\t<raw StatsD line>`.
Datagrams holding several newline-separated metrics were split into rows with the same time.
Prefix `{PREFIX}.`; plain StatsD (no DogStatsD/InfluxDB tags), so tagged metrics arrive without
their tags next to their legacy dotted names.

## How it was recorded

- Airflow: `apache-airflow[celery,postgres,statsd]=={version}` + `celery[redis]<5.7` (the official
  constraints file is on GitHub, not reachable; the `postgres` extra brings psycopg2 and asyncpg,
  which Airflow 3 needs for its async metadata-DB engine), in its own venv made by
  `scripts/airflow-env.sh`.
- Executor: {executor}, worker concurrency {args.worker_concurrency}.
- Components: `airflow db migrate`, then api-server, scheduler, dag-processor, triggerer
  {worker_part}(all on 127.0.0.1; scheduler, triggerer and worker
  with `--skip-serve-logs`),
  configured by environment variables only (see `airflow_env()` in the script): `statsd_on`,
  host/port of the listener, prefix `{PREFIX}`, `load_examples=False`, dags folder
  `tests/fixtures/dags`, `[dag_processor] refresh_interval=10`, `min_file_process_interval=15`,
  `[scheduler] pool_metrics_interval=5`, `ti_metrics_interval=10` (formerly
  `running_metrics_interval`), `dagrun_metrics_interval=10`.
- DAGs (`tests/fixtures/dags`): {", ".join(f"`{d}`" for d in dags)}. Pool `{SMALL_POOL[0]}`
  ({SMALL_POOL[1]} slots) is created through the REST API, the DAGs are unpaused and
  {", ".join(f"`{d}`" for d in MANUAL_DAGS)} are triggered at the start and again half way.
- Timeline (seconds on the capture clock): db migrated {tl["migrated_at"]}, components
  started {tl["components_started_at"]}, DAGs triggered {tl["triggered_at"]},
  stop (SIGTERM) {tl["stop_requested_at"]}, all processes gone {tl["stopped_at"]}.
  `--duration {args.duration:g}` counts from the component start; shutdown lines
  (`*_end`) are included.
- Size: {rows} rows, {size} bytes, {n_dgrams} datagrams, {len(types)} distinct metric names.
  {trunc}

Re-record (about {minutes} minutes; needs `uv`, `redis-server`, PostgreSQL 15):

    {cmd}

## Expected metric families

{chr(10).join(present + missing)}

{NOTES}

## Distinct metric names (`name|statsd type`)

```
{chr(10).join(compact_names(types))}
```
"""
    path.write_text(text)


# Findings from reading the Airflow source next to the capture; kept in the generated README.
NOTES = """## Notes (checked against the Airflow 3.3.2 source)

- Every tagged metric arrives twice: the tagged name without its tags (plain StatsD drops them,
  so e.g. `ti.finish` is one counter for all DAGs) and the legacy dotted name that carries the
  dimensions (`ti.finish.<dag>.<task>.<state>`). Legacy names come from
  `airflow/_shared/observability/metrics/metrics_template.yaml`; a `.` inside a tag value
  becomes `__`.
- `task.queued_duration` / `dag.<dag>.<task>.queued_duration` are never emitted by Airflow 3.3.2
  with any executor: their only emitter is `TaskInstance.emit_state_change_metric(RUNNING)`, called
  from `TaskInstance._check_and_change_state_before_execution`, which nothing calls in Airflow 3
  (tasks now enter RUNNING through the Execution API `ti_run` endpoint, which sends no metric).
  `task.scheduled_duration` (scheduler, on SCHEDULED -> QUEUED) is emitted.
- `executor.open_slots|queued_tasks|running_tasks` arrive both bare and with the
  `.CeleryExecutor` suffix although only one executor is configured: the bare name is the
  single-executor name, the suffixed one is the legacy name built from the `executor_class_name`
  tag. `executor.open_slots` is `[core] parallelism` (32) minus the executor's running tasks,
  not the Celery worker concurrency.
- Job start/end counters are `job_start` / `job_end` (from the `Job` class), not
  `SchedulerJob_start` etc. `job_start` arrives once for three jobs: the triggerer and
  dag-processor send it before their runners call `stats.initialize()`, so it goes to the
  no-op logger; `job_end` arrives three times at shutdown.
- The triggerer's legacy suffix is the job hostname (`[core] hostname_callable`, here the machine
  name); dots in a hostname would become `__`.
- `dag_processing.last_duration.<bundle>.<file stem>` carries the bundle name (`dags-folder`);
  `dag_processing.last_run.seconds_ago.<file stem>` does not. Neither keeps the `.py` suffix.
- A task that defers sends `ti.finish.<dag>.<task>.deferred` when it hands over to the triggerer.
  `WaitSensor(deferrable=True)` uses `end_from_trigger=True`: the triggerer marks the task
  successful, so no worker resumes it and no `ti.finish.<...>.success` / `ti_successes` is sent for
  it (only `triggers.succeeded`). `EmptyOperator` tasks are never executed, so they send no
  `ti.start`/`ti.finish`/`task.duration` either.
- One metric is sampled: `api_server.dag_bag.cache_size:<n>|g|@0.1`.
- The `queued_duration` gap is a known upstream bug: apache/airflow#63503 and #66067 (open);
  the fix (PR #67592, emit from `ti_run`) was not in 3.3.2.
- Not seen because nothing triggered them: `celery.task_timeout_error`,
  `celery.execute_command.failure`, `scheduler.tasks.killed_externally`,
  `task_instances_without_heartbeats_killed`, `*_heartbeat_failure`, `triggers.failed`,
  `scheduler.critical_section_busy` (needs several schedulers),
  `triggers.blocked_main_thread`, `dag_processing.processor_timeouts`, `asset.*`."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--duration",
        type=float,
        default=270,
        help="seconds to run after starting Airflow (default 270)",
    )
    ap.add_argument("--airflow-version", default=DEFAULT_VERSION)
    ap.add_argument(
        "--venv", help="existing Airflow venv (default: made/reused by scripts/airflow-env.sh)"
    )
    ap.add_argument("--executor", choices=["celery", "local"], default="celery")
    ap.add_argument("--worker-concurrency", type=int, default=4)
    ap.add_argument(
        "--grace",
        type=float,
        default=60,
        help="seconds a component gets after SIGTERM before its group is killed (default 60)",
    )
    ap.add_argument(
        "--output",
        type=Path,
        help="capture path (default tests/fixtures/statsd/airflow-<v>-<executor>.statsd)",
    )
    ap.add_argument("--readme", type=Path, default=OUT_DIR / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument(
        "--max-bytes", type=int, default=3_000_000, help="cap for the capture file (default 3 MB)"
    )
    ap.add_argument(
        "--keep-workdir", action="store_true", help="keep AIRFLOW_HOME, logs and data dirs"
    )
    args = ap.parse_args()

    for tool in (["redis-server"] if args.executor == "celery" else []) + ["uv"]:
        if not shutil.which(tool) and not (tool == "uv" and args.venv):
            raise SystemExit(f"{tool} not found on PATH")
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql)")

    recorder, facts = run_airflow(args)
    n_dgrams, lines = recorder.snapshot()
    output = args.output or OUT_DIR / f"airflow-{args.airflow_version}-{args.executor}.statsd"
    rows, cutoff = write_capture(lines, output, args.max_bytes)
    types = metric_types(lines[:rows])
    report = expected_report(types, lines[:rows])

    print()
    log(
        f"capture: {output} ({output.stat().st_size} bytes, {rows} rows"
        + (f", truncated at t={cutoff:.3f}s" if cutoff is not None else "")
        + ")"
    )
    log(f"datagrams: {n_dgrams}; lines: {len(lines)}; distinct metric names: {len(types)}")
    for name, t in types.items():
        print(f"  {name:<90} {','.join(sorted(t))}")
    print()
    log("expected metric families:")
    for label, ok, ex in report:
        print(f"  {'OK     ' if ok else 'MISSING'} {label}" + (f"  [{ex}]" if ex else ""))
    if not args.no_readme:
        write_readme(
            args.readme,
            args,
            args.airflow_version,
            facts,
            n_dgrams,
            lines,
            output,
            rows,
            cutoff,
            types,
            report,
        )
        log(f"wrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
