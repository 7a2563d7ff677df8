"""The programs the local runtime runs, where to find them, and `sextant local setup`.

Airflow lives in its own virtual environment (it pins FastAPI below what Sextant uses), made
with uv under the tools dir as `airflow-<version>`, the same place `scripts/airflow-env.sh` and
the test harness use. The official constraints file is on GitHub, which is not always
reachable, so only the one pin known to matter is applied: `celery[redis]<5.7` (an unpinned
celery 5.7 breaks the Celery provider: "cannot load executor"). The `postgres` extra brings
psycopg2 and asyncpg (Airflow 3 opens an async engine on the metadata database too); flower
comes with the `celery` extra. The `elasticsearch` extra brings the provider whose handler
prints each finished task try as JSON lines (Sextant ships them to the deployment's data
stream) and reads task logs back from there; its client is held below 9, which refuses to talk
to an Elasticsearch 8 cluster.

PostgreSQL, PgBouncer and Redis come from the operating system (Debian: `postgresql`,
`pgbouncer`, `redis-server`), statsd_exporter from the Go module proxy. Setup checks them and
says exactly what to install; it installs only Airflow itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.core.settings import LocalSettings

PIP_REQUIREMENTS = (
    "apache-airflow[celery,elasticsearch,postgres,statsd]=={version}",
    "celery[redis]<5.7",
    "elasticsearch<9",
)
SBIN = Path("/usr/sbin")
# What to tell a user who lacks a program.
HINTS = {
    "postgres": "apt-get install postgresql (PostgreSQL 15)",
    "initdb": "apt-get install postgresql (PostgreSQL 15)",
    "psql": "apt-get install postgresql-client",
    "pgbouncer": "apt-get install pgbouncer",
    "redis-server": "apt-get install redis-server",
    "statsd_exporter": "go install github.com/prometheus/statsd_exporter@v0.28.0 "
    "(or run scripts/install-test-deps.sh), and put it on PATH or in <tools dir>/bin",
    "uv": "pip install uv (https://docs.astral.sh/uv/)",
}

Say = Callable[[str], None]


class ToolMissing(Exception):
    """Something the local runtime needs is not installed; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Tools:
    """Absolute paths of every program a local deployment runs."""

    airflow: Path
    python: Path
    postgres: Path
    initdb: Path
    psql: Path
    pgbouncer: Path
    redis_server: Path
    statsd_exporter: Path

    @property
    def venv(self) -> Path:
        return self.python.parent.parent


def venv_path(settings: LocalSettings, version: str | None = None) -> Path:
    """Where the Airflow virtual environment of `version` lives."""
    return settings.tools_dir / f"airflow-{version or settings.airflow_version}"


def find_program(name: str, settings: LocalSettings) -> Path | None:
    """`name` in PATH, /usr/sbin or the tools dir's bin folder."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for folder in (SBIN, settings.tools_dir / "bin"):
        if os.access(folder / name, os.X_OK):
            return folder / name
    return None


def airflow_installed(venv: Path, version: str) -> bool:
    """Whether `venv` holds Airflow `version` with the drivers a Celery deployment needs."""
    python = venv / "bin" / "python"
    if not os.access(venv / "bin" / "airflow", os.X_OK):
        return False
    check = (
        "import importlib.metadata as m, sys; "
        "import asyncpg, psycopg2, statsd, flower, celery, airflow.providers.elasticsearch; "
        f"sys.exit(m.version('apache-airflow') != {version!r} "
        "or tuple(int(p) for p in celery.__version__.split('.')[:2]) >= (5, 7))"
    )
    try:
        result = subprocess.run(
            [str(python), "-c", check], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def missing_programs(settings: LocalSettings) -> list[str]:
    """One line per missing operating-system program, with how to install it."""
    problems = []
    for name in ("postgres", "initdb", "psql"):
        if not os.access(settings.postgres_bin_dir / name, os.X_OK):
            problems.append(f"{settings.postgres_bin_dir / name} not found: {HINTS[name]}")
    for name in ("pgbouncer", "redis-server", "statsd_exporter"):
        if find_program(name, settings) is None:
            problems.append(f"{name} not found: {HINTS[name]}")
    return problems


def find_tools(settings: LocalSettings, version: str | None = None) -> Tools:
    """Every program, or ToolMissing listing everything that is missing and how to fix it."""
    version = version or settings.airflow_version
    venv = venv_path(settings, version)
    problems = []
    if not os.access(venv / "bin" / "airflow", os.X_OK):
        problems.append(f"Airflow {version} is not installed in {venv}: run `sextant local setup`")
    problems += missing_programs(settings)
    if problems:
        raise ToolMissing("; ".join(problems))
    pgbouncer = find_program("pgbouncer", settings)
    redis = find_program("redis-server", settings)
    statsd = find_program("statsd_exporter", settings)
    if pgbouncer is None or redis is None or statsd is None:  # checked above; for the types
        raise ToolMissing("pgbouncer, redis-server or statsd_exporter vanished")
    return Tools(
        airflow=venv / "bin" / "airflow",
        python=venv / "bin" / "python",
        postgres=settings.postgres_bin_dir / "postgres",
        initdb=settings.postgres_bin_dir / "initdb",
        psql=settings.postgres_bin_dir / "psql",
        pgbouncer=pgbouncer,
        redis_server=redis,
        statsd_exporter=statsd,
    )


def _find_uv() -> list[str] | None:
    found = shutil.which("uv")
    if found:
        return [found]
    # uv installed into Sextant's own environment (pip install uv).
    candidate = Path(sys.executable).parent / "uv"
    if os.access(candidate, os.X_OK):
        return [str(candidate)]
    return None


def _run_with_progress(command: list[str], what: str, say: Say, every: float = 10.0) -> None:
    """Run `command`, saying every `every` s that it is still at work; its output on failure."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    output: list[bytes] = []
    reader = threading.Thread(
        target=lambda: (
            output.extend(iter(process.stdout.readline, b"")) if process.stdout else None
        ),
        daemon=True,
    )
    reader.start()
    while True:
        try:
            process.wait(timeout=every)
            break
        except subprocess.TimeoutExpired:
            say(f"  still {what} ({time.monotonic() - started:.0f} s)")
    reader.join(timeout=5)
    if process.returncode != 0:
        tail = b"".join(output[-30:]).decode(errors="replace").rstrip()
        raise ToolMissing(f"{what} failed (exit status {process.returncode}):\n{tail}")


STATSD_EXPORTER_MODULE = "github.com/prometheus/statsd_exporter@v0.28.0"


def _find_go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if os.access(fallback, os.X_OK) else None


def install_statsd_exporter(settings: LocalSettings, say: Say) -> bool:
    """Build statsd_exporter into `<tools dir>/bin` from the Go module proxy, if Go is here."""
    if find_program("statsd_exporter", settings) is not None:
        return True
    go = _find_go()
    if go is None:
        say(
            f"  statsd_exporter missing and no Go toolchain to build it: {HINTS['statsd_exporter']}"
        )
        return False
    say(f"statsd_exporter: go install {STATSD_EXPORTER_MODULE} into {settings.tools_dir / 'bin'}")
    bin_dir = settings.tools_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    command = [
        "env",
        f"GOBIN={bin_dir}",
        f"GOMODCACHE={settings.tools_dir / 'go' / 'mod'}",
        f"GOCACHE={settings.tools_dir / 'go' / 'cache'}",
        "GOFLAGS=-modcacherw",
        go,
        "install",
        STATSD_EXPORTER_MODULE,
    ]
    _run_with_progress(command, "building statsd_exporter", say)
    return find_program("statsd_exporter", settings) is not None


def setup(settings: LocalSettings, say: Say, version: str | None = None) -> Path:
    """Create (or complete) the Airflow virtual environment; returns its path.

    Idempotent: an environment that already holds the right Airflow is left alone. Missing
    operating-system programs are reported (with how to install them) but do not stop the
    Airflow install; the caller decides what a gap means.
    """
    version = version or settings.airflow_version
    venv = venv_path(settings, version)
    say(f"Airflow {version} environment: {venv}")
    if airflow_installed(venv, version):
        say("  already installed")
        return venv
    uv = _find_uv()
    if uv is None:
        raise ToolMissing(f"uv not found: {HINTS['uv']}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not (venv / "bin" / "python").exists():
        say("  creating the virtual environment (python 3.11)")
        _run_with_progress(
            [*uv, "venv", "--quiet", "--python", "3.11", str(venv)], "creating the venv", say
        )
    requirements = [r.format(version=version) for r in PIP_REQUIREMENTS]
    say(f"  installing {' '.join(requirements)} (about 20 s with a warm cache, minutes without)")
    _run_with_progress(
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *requirements],
        "installing Airflow",
        say,
    )
    if not airflow_installed(venv, version):
        raise ToolMissing(f"{venv} does not hold a working Airflow {version} after the install")
    say(f"  installed in {time.monotonic() - started:.0f} s")
    return venv
