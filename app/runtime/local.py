"""The local runtime: every deployment as supervised processes on this machine.

The embedded default for trying Sextant on one machine. Per deployment, in
`<state_dir>/<deployment>/`:

    logs/<component>.log      one log per process (scheduler.log, api_server.log, workers-1.log)
    airflow/                  AIRFLOW_HOME (task logs, the connect-args module)
    dags/                     the deployment's DAG files
    pgbouncer/ redis/ statsd/ configuration of the deployment's own PgBouncer, Redis, exporter
    run/                      pid files (pid + kernel start time), for adoption after a restart
    ports.json secrets.json   its 127.0.0.1 ports and generated secrets, kept across restarts
    runtime.json              the process specs last applied (what a restarted Sextant adopts)

and one database (and role) per deployment in the PostgreSQL cluster Sextant runs from
`<state_dir>/_postgres/`, reached through the deployment's PgBouncer (transaction pooling, as the
official chart). Components: PgBouncer, Redis (Celery broker, with a password), statsd_exporter
with Sextant's mapping, `airflow db migrate` (a one-shot job), api-server, scheduler,
dag-processor, triggerer, N Celery workers and Flower. Everything listens on 127.0.0.1 only: the
scheduler, triggerer and workers run with `--skip-serve-logs` (their log servers would bind
0.0.0.0), and their log-server ports are set to free loopback ports as a second guard.

`apply` is quick: it prepares folders, ports, secrets, the database and the configuration, hands
the process specs to the supervisor and returns; the supervisor brings the components up in
dependency order and `status` says what each is waiting for. Rendering is pure: the artifact
is the deployment's process plan without ports or secrets, so its hash changes only with the
spec.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from app.core.settings import LocalSettings, Settings
from app.deployments.spec import Component, Executor, components_for
from app.integrations.airflow import flower_active_tasks
from app.integrations.errors import IntegrationError, PermanentError, TransientError
from app.logs import airflow_config as airflow_logging
from app.observability import statsd
from app.provisioning.targets import Applied, Artifact, DeploymentView
from app.runtime.base import (
    TARGET_NAME,
    ComponentState,
    ComponentStatus,
    RuntimeStatus,
    ScaleRequest,
    WorkerLoad,
)
from app.runtime.local_postgres import GROUP as PG_GROUP
from app.runtime.local_postgres import UNIT as PG_UNIT
from app.runtime.local_postgres import LocalPostgres, chown_to_service, run_as
from app.runtime.local_supervisor import (
    HOST,
    Memory,
    ProcessSpec,
    Readiness,
    ReadyKind,
    Supervisor,
    UnitState,
    UnitView,
    log_tail,
    specs_from_json,
    specs_to_json,
    tree_memory,
    wait_until,
)
from app.runtime.local_tools import ToolMissing, Tools, find_tools

logger = logging.getLogger(__name__)

UPSTREAM = "local runtime"
PORT_RANGE = (10000, 20000)  # below the tests' harness range and the ephemeral range
PORT_NAMES = (
    "api_server",
    "flower",
    "pgbouncer",
    "redis",
    "statsd_ingest",
    "statsd_web",
    "worker_logs",
    "trigger_logs",
    "scheduler_health",
)
MIGRATE = "migrate"
WORKER_PREFIX = "workers-"
STATSD_PREFIX = "airflow"
POSTGRES_WAIT = 60.0
DELETE_GRACE = 30.0
WORKER_READY_LINE = " ready."
DEFAULT_WORKER_CONCURRENCY = 16
DEFAULT_PARALLELISM = 32  # Airflow's [core] parallelism
ARTIFACT_PREFIX = "runtime/local/"
CONNECT_ARGS_MODULE = "sextant_airflow_db"
CONNECT_ARGS_SOURCE = '''"""Written by Sextant: asyncpg through PgBouncer's transaction pooling.

PgBouncer 1.18 does not track prepared statements, so asyncpg's statement cache is off and each
statement gets a unique name (SQLAlchemy's documented recipe for PgBouncer).
"""
import uuid

ASYNC_CONNECT_ARGS = {
    "statement_cache_size": 0,
    "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
}
'''


def database_name(deployment: str) -> str:
    """The deployment's database and role in the shared cluster."""
    return "airflow_" + deployment.replace("-", "_")


def worker_unit(index: int) -> str:
    return f"{WORKER_PREFIX}{index}"


def _replica_name(component: str, index: int) -> str:
    # The first replica carries the plain component name; FluentD strips `-<n>` suffixes.
    return component if index == 1 else f"{component}-{index}"


def _can_bind(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_private(path: Path, text: str, mode: int = 0o600) -> bool:
    """Write `text` (atomically, with `mode`) unless the file holds it already; True if written."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
    return True


def plan(deployment: DeploymentView) -> dict[str, Any]:
    """What the runtime will run for a deployment: pure, no ports or secrets."""
    executor = Executor(deployment.executor)
    components = {
        c.value: int(deployment.components.get(c.value, {}).get("replicas", 1))
        for c in components_for(executor)
    }
    concurrency = int(deployment.extra.get("worker_concurrency", DEFAULT_WORKER_CONCURRENCY))
    most_workers = int(deployment.extra.get("max_workers", components.get("workers", 1)))
    return {
        "deployment": deployment.name,
        "workspace": deployment.workspace,
        "executor": executor.value,
        "airflow_version": deployment.airflow_version,
        "worker_concurrency": concurrency,
        # The executor holds at most [core] parallelism tasks: enough to fill every worker the
        # autoscaler may run, or its load (queued + running) would stop growing below that.
        "parallelism": max(DEFAULT_PARALLELISM, concurrency * most_workers),
        "replicas": components,
    }


class LocalRuntime:
    """Runs deployments as supervised local processes (see the module docstring)."""

    name = TARGET_NAME

    def __init__(
        self,
        settings: LocalSettings,
        supervisor: Supervisor | None = None,
        *,
        elasticsearch_url: str | None = None,
        elasticsearch_auth: tuple[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.supervisor = supervisor or Supervisor(log_max_bytes=settings.log_max_bytes)
        # Where the deployments' task logs go (and are read back from); None keeps them local.
        self.elasticsearch_url = elasticsearch_url
        self.elasticsearch_auth = elasticsearch_auth
        self._log_locks: dict[str, asyncio.Lock] = {}
        self._started = False
        self._lock = asyncio.Lock()
        self._postgres_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRuntime:
        """The runtime Sextant runs with: its task logs go to Sextant's Elasticsearch, if any."""
        url, auth = settings.elasticsearch.url, None
        if url:
            parts = urlsplit(url)
            password = settings.elasticsearch.password
            if parts.username:
                auth = (unquote(parts.username), unquote(parts.password or ""))
                host = parts.hostname or ""
                netloc = host if parts.port is None else f"{host}:{parts.port}"
                url = urlunsplit(parts._replace(netloc=netloc))
            elif settings.elasticsearch.username:
                secret = password.get_secret_value() if password is not None else ""
                auth = (settings.elasticsearch.username, secret)
        return cls(settings.local, elasticsearch_url=url, elasticsearch_auth=auth)

    # --- folders ------------------------------------------------------------------------------

    def home(self, deployment: str) -> Path:
        return self.state_dir / deployment

    def logs_dir(self, deployment: str) -> Path:
        return self.home(deployment) / "logs"

    def dags_folder(self, deployment: str) -> Path:
        """Where the deployment's DAG files go (the dag-processor re-reads it every 30 s)."""
        return self.home(deployment) / "dags"

    def ports(self, deployment: str) -> dict[str, int] | None:
        data = _read_json(self.home(deployment) / "ports.json")
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else None

    def api_url(self, deployment: str) -> str | None:
        """The deployment's Airflow api-server (UI and REST API)."""
        ports = self.ports(deployment)
        return f"http://{HOST}:{ports['api_server']}" if ports else None

    def flower_url(self, deployment: str) -> str | None:
        ports = self.ports(deployment)
        return f"http://{HOST}:{ports['flower']}" if ports else None

    def _known_deployments(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        return sorted(
            p.parent.name
            for p in self.state_dir.glob("*/ports.json")
            if not p.parent.name.startswith("_")
        )

    # --- ports and secrets --------------------------------------------------------------------

    def _taken_ports(self) -> set[int]:
        taken: set[int] = set()
        for name in self._known_deployments():
            taken |= set((self.ports(name) or {}).values())
        pg = _read_json(self.state_dir / PG_GROUP / "port.json")
        if isinstance(pg, dict):
            taken.add(int(pg["port"]))
        return taken

    def _pick_port(self, taken: set[int], udp: bool = False) -> int:
        for _ in range(2000):
            port = random.randint(*PORT_RANGE)
            if port in taken or not _can_bind(port, socket.SOCK_STREAM):
                continue
            if udp and not _can_bind(port, socket.SOCK_DGRAM):
                continue
            taken.add(port)
            return port
        raise TransientError(UPSTREAM, f"no free port on {HOST} in {PORT_RANGE}")

    def ensure_ports(self, deployment: str) -> dict[str, int]:
        """The deployment's ports, allocated once and kept (a restart keeps its addresses)."""
        current = self.ports(deployment)
        if current is not None and all(name in current for name in PORT_NAMES):
            return current
        taken = self._taken_ports()
        ports = dict(current or {})
        for name in PORT_NAMES:
            if name not in ports:
                ports[name] = self._pick_port(taken, udp=name == "statsd_ingest")
        _write_private(
            self.home(deployment) / "ports.json", json.dumps(ports, indent=2) + "\n", 0o644
        )
        return ports

    def _postgres(self) -> LocalPostgres:
        path = self.state_dir / PG_GROUP / "port.json"
        data = _read_json(path)
        if isinstance(data, dict):
            port = int(data["port"])
        else:
            port = self._pick_port(self._taken_ports())
            _write_private(path, json.dumps({"port": port}) + "\n", 0o644)
        return LocalPostgres(self.state_dir, self.settings.postgres_bin_dir, port)

    def _secrets(self, deployment: str) -> dict[str, str]:
        path = self.home(deployment) / "secrets.json"
        data = _read_json(path)
        if isinstance(data, dict) and {"fernet_key", "db_password"} <= set(data):
            return {str(k): str(v) for k, v in data.items()}
        generated = {
            "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "api_secret_key": secrets.token_urlsafe(32),
            "jwt_secret": secrets.token_urlsafe(48),
            "db_password": secrets.token_hex(16),
            "redis_password": secrets.token_hex(16),
        }
        _write_private(path, json.dumps(generated, indent=2) + "\n")
        return generated

    # --- the Target protocol ------------------------------------------------------------------

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """The deployment's process plan (components, replicas, executor); pure."""
        text = json.dumps(plan(deployment), indent=2, sort_keys=True) + "\n"
        return [Artifact(f"{ARTIFACT_PREFIX}{deployment.name}.json", text)]

    def configured(self) -> bool:
        """Always: a missing program is reported by apply, with what to install."""
        return True

    async def start(self) -> None:
        """Supervise again what a previous Sextant left running: adopt it, or restart it."""
        async with self._lock:
            if self._started:
                return
            self._started = True
            self.supervisor.start()
            deployments = [
                name
                for name in self._known_deployments()
                if (self.home(name) / "runtime.json").exists()
            ]
            if not deployments:
                return
            postgres = self._postgres()
            if postgres.initialised():
                self.supervisor.ensure(PG_GROUP, [postgres.spec()], postgres.run_dir)
            for name in deployments:
                state = _read_json(self.home(name) / "runtime.json")
                if not isinstance(state, dict):
                    continue
                specs = specs_from_json(state.get("specs") or [])
                self.supervisor.ensure(name, specs, self.home(name) / "run")
                logger.info("supervising local deployment %s again", name)

    async def aclose(self) -> None:
        """Stop supervising; the deployments keep running for the next Sextant to adopt."""
        await self.supervisor.aclose()
        self._started = False

    async def shutdown(self) -> None:
        """Stop every process of every deployment and the PostgreSQL server (demo, tests)."""
        groups = [g for g in self.supervisor.groups() if g != PG_GROUP]
        for group in groups:
            await self.supervisor.stop_group(group, grace=DELETE_GRACE)
        await self.supervisor.stop_group(PG_GROUP)
        await self.aclose()

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Make the deployment's components run as planned; quick, the supervisor does the rest."""
        await self.start()
        try:
            tools = await asyncio.to_thread(find_tools, self.settings, deployment.airflow_version)
        except ToolMissing as exc:
            raise PermanentError(UPSTREAM, str(exc)) from exc
        name = deployment.name
        desired = plan(deployment)
        try:
            writes = await self._prepare(name, tools)
            specs = self._specs(name, desired, tools)
        except OSError as exc:
            raise TransientError(UPSTREAM, f"{exc.strerror or exc}: {exc.filename}") from exc
        state = {"plan": desired, "workers": desired["replicas"].get(Component.WORKERS.value, 0)}
        writes += self._save_state(name, state, specs)
        writes += self.supervisor.ensure(name, specs, self.home(name) / "run")
        return Applied(writes, f"{len(specs)} processes supervised")

    async def _prepare(self, name: str, tools: Tools) -> int:
        """Folders, ports, secrets, the shared PostgreSQL and the deployment's database."""
        home = self.home(name)
        for folder in ("logs", "airflow", "dags", "run", "redis", "statsd"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        # PgBouncer runs as `postgres` under root and must read its folder.
        (home / "pgbouncer").mkdir(exist_ok=True)
        chown_to_service(home / "pgbouncer")
        with contextlib.suppress(OSError):
            home.chmod(0o711)
            self.state_dir.chmod(0o711)
        ports = self.ensure_ports(name)
        secret = self._secrets(name)
        await self._ensure_postgres()
        postgres = self._postgres()
        created = await postgres.ensure_database(database_name(name), secret["db_password"])
        writes = 1 if created else 0
        writes += self._write_configs(name, ports, secret, postgres.port)
        return writes

    async def _ensure_postgres(self) -> None:
        async with self._postgres_lock:  # two deployments applied at once share one initdb
            await self._ensure_postgres_locked()

    async def _ensure_postgres_locked(self) -> None:
        postgres = self._postgres()
        await asyncio.to_thread(postgres.initialise)
        self.supervisor.ensure(PG_GROUP, [postgres.spec()], postgres.run_dir)
        unit = self.supervisor.unit(PG_GROUP, PG_UNIT)
        ready = await wait_until(lambda: unit is not None and unit.satisfied(), POSTGRES_WAIT)
        if not ready:
            reason = unit.reason if unit is not None else ""
            raise TransientError(
                UPSTREAM,
                f"PostgreSQL not ready after {POSTGRES_WAIT:.0f} s ({reason}); "
                f"log tail: {log_tail(postgres.log_path, 5)}",
            )

    def _write_configs(
        self, name: str, ports: Mapping[str, int], secret: Mapping[str, str], pg_port: int
    ) -> int:
        home = self.home(name)
        database = database_name(name)
        pgbouncer = home / "pgbouncer"
        userlist = pgbouncer / "userlist.txt"
        ini = (
            "[databases]\n"
            f"airflow = host={HOST} port={pg_port} dbname={database}\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\n"
            f"listen_port = {ports['pgbouncer']}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 200\n"
            "default_pool_size = 10\n"
            f"stats_users = {database}\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        writes = 0
        for path, text in (
            (userlist, f'"{database}" "{secret["db_password"]}"\n'),
            (pgbouncer / "pgbouncer.ini", ini),
        ):
            if _write_private(path, text):
                writes += 1
            chown_to_service(path)
        redis_conf = (
            f"bind {HOST}\n"
            f"port {ports['redis']}\n"
            f"requirepass {secret['redis_password']}\n"
            'save ""\n'
            "appendonly no\n"
            f"dir {home / 'redis'}\n"
            "protected-mode yes\n"
        )
        writes += _write_private(home / "redis" / "redis.conf", redis_conf)
        writes += _write_private(home / "statsd" / "mappings.yml", statsd.mapping_text(), 0o644)
        writes += _write_private(
            home / "airflow" / "sextant" / f"{CONNECT_ARGS_MODULE}.py", CONNECT_ARGS_SOURCE, 0o644
        )
        return writes

    def _airflow_env(self, name: str, desired: Mapping[str, Any], tools: Tools) -> dict[str, str]:
        home = self.home(name)
        ports = self.ensure_ports(name)
        secret = self._secrets(name)
        database = database_name(name)
        password = secret["db_password"]
        db = f"{database}:{password}@{HOST}:{ports['pgbouncer']}/airflow"
        api = f"http://{HOST}:{ports['api_server']}"
        return {
            "PATH": f"{tools.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(home)),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(home / "airflow" / "sextant"),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder(name)),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": desired["executor"],
            "AIRFLOW__CORE__PARALLELISM": str(desired.get("parallelism", DEFAULT_PARALLELISM)),
            "AIRFLOW__CORE__FERNET_KEY": secret["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            # Every user is an admin without a password: the api-server listens on 127.0.0.1.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": (
                f"{CONNECT_ARGS_MODULE}.ASYNC_CONNECT_ARGS"
            ),
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(ports["api_server"]),
            "AIRFLOW__API__BASE_URL": f"{api}/",
            "AIRFLOW__API__SECRET_KEY": secret["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": secret["jwt_secret"],
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": HOST,
            "AIRFLOW__METRICS__STATSD_PORT": str(ports["statsd_ingest"]),
            "AIRFLOW__METRICS__STATSD_PREFIX": STATSD_PREFIX,
            # New DAG files show up within 30 s instead of the default 5 minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # Log servers are off (--skip-serve-logs); loopback ports as a second guard.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                ports["scheduler_health"]
            ),
            "AIRFLOW__CELERY__BROKER_URL": (
                f"redis://:{secret['redis_password']}@{HOST}:{ports['redis']}/0"
            ),
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(desired["worker_concurrency"]),
            # The pool grows to the concurrency under load and shrinks back to one process
            # when idle: an idle worker costs ~0.2 GB instead of one process per task slot.
            "AIRFLOW__CELERY__WORKER_AUTOSCALE": f"{desired['worker_concurrency']},1",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            # Flower's API answers on 127.0.0.1 only; the runtime reads worker load from it.
            "FLOWER_UNAUTHENTICATED_API": "true",
            **self._logging_env(name, str(desired["airflow_version"])),
        }

    def _logging_env(self, name: str, airflow_version: str) -> dict[str, str]:
        """Remote logging to the deployment's data stream, as on Kubernetes (app.logs).

        Workers print each finished try as JSON lines into their log file, which Sextant's log
        shipper (app.logs.shipping, the local stand-in for FluentD) sends to the data stream;
        the api-server reads task logs back from there.
        """
        if not self.elasticsearch_url:
            return {}
        env = airflow_logging.render(
            name, airflow_version, elasticsearch_url=self.elasticsearch_url
        ).env()
        if self.elasticsearch_auth is not None:
            pair = ":".join(self.elasticsearch_auth).encode()
            env[airflow_logging.CREDENTIALS_ENV] = base64.b64encode(pair).decode()
        return env

    def _specs(
        self, name: str, desired: Mapping[str, Any], tools: Tools, workers: int | None = None
    ) -> list[ProcessSpec]:
        """Every process of the deployment, in start order."""
        home = self.home(name)
        logs = self.logs_dir(name)
        ports = self.ensure_ports(name)
        replicas: Mapping[str, int] = desired["replicas"]
        env = self._airflow_env(name, desired, tools)
        plain = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        airflow = str(tools.airflow)

        def log(unit: str) -> str:
            return str(logs / f"{unit}.log")

        specs = [
            ProcessSpec(
                name="pgbouncer",
                component=Component.PGBOUNCER.value,
                argv=(str(tools.pgbouncer), str(home / "pgbouncer" / "pgbouncer.ini")),
                log_path=log("pgbouncer"),
                readiness=Readiness(ReadyKind.TCP, port=ports["pgbouncer"]),
                env=plain,
                cwd=str(home / "pgbouncer"),
                after=(f"{PG_GROUP}:{PG_UNIT}",),
                run_as=run_as(),
                title=f"PgBouncer on {HOST}:{ports['pgbouncer']}",
            ),
            ProcessSpec(
                name="statsd",
                component=Component.STATSD.value,
                argv=(
                    str(tools.statsd_exporter),
                    f"--statsd.listen-udp={HOST}:{ports['statsd_ingest']}",
                    f"--statsd.listen-tcp={HOST}:{ports['statsd_ingest']}",
                    f"--web.listen-address={HOST}:{ports['statsd_web']}",
                    *statsd.exporter_args(home / "statsd" / "mappings.yml"),
                ),
                log_path=log("statsd"),
                readiness=Readiness(
                    ReadyKind.HTTP, url=f"http://{HOST}:{ports['statsd_web']}/metrics"
                ),
                env=plain,
                cwd=str(home / "statsd"),
                title=f"statsd_exporter on {HOST}:{ports['statsd_web']}",
            ),
            ProcessSpec(
                name=MIGRATE,
                component=MIGRATE,
                argv=(airflow, "db", "migrate"),
                log_path=log(MIGRATE),
                readiness=Readiness(ReadyKind.ALIVE),
                env=env,
                cwd=str(home),
                after=("pgbouncer",),
                job=True,
                title="the metadata database migration (airflow db migrate)",
            ),
        ]
        celery = desired["executor"] == Executor.CELERY.value
        if celery:
            # The Celery broker; a LocalExecutor deployment runs its tasks in the scheduler.
            specs.append(
                ProcessSpec(
                    name="redis",
                    component=Component.REDIS.value,
                    argv=(str(tools.redis_server), str(home / "redis" / "redis.conf")),
                    log_path=log("redis"),
                    readiness=Readiness(ReadyKind.TCP, port=ports["redis"]),
                    env=plain,
                    cwd=str(home / "redis"),
                    title=f"Redis on {HOST}:{ports['redis']}",
                )
            )
        api_workers = max(1, int(replicas.get(Component.API_SERVER.value, 1)))
        specs.append(
            ProcessSpec(
                name=Component.API_SERVER.value,
                component=Component.API_SERVER.value,
                argv=(
                    airflow,
                    "api-server",
                    "--host",
                    HOST,
                    "--port",
                    str(ports["api_server"]),
                    "--workers",
                    str(api_workers),
                ),
                log_path=log(Component.API_SERVER.value),
                readiness=Readiness(
                    ReadyKind.HTTP, url=f"http://{HOST}:{ports['api_server']}/api/v2/version"
                ),
                env=env,
                cwd=str(home),
                after=(MIGRATE,),
                stop_grace=30.0,
                title=f"api-server on {HOST}:{ports['api_server']}",
            )
        )
        for component, command in (
            (Component.SCHEDULER, ("scheduler", "--skip-serve-logs")),
            (Component.DAG_PROCESSOR, ("dag-processor",)),
            (Component.TRIGGERER, ("triggerer", "--skip-serve-logs")),
        ):
            for index in range(1, int(replicas.get(component.value, 1)) + 1):
                unit = _replica_name(component.value, index)
                specs.append(
                    ProcessSpec(
                        name=unit,
                        component=component.value,
                        argv=(airflow, *command),
                        log_path=log(unit),
                        readiness=Readiness(ReadyKind.ALIVE, seconds=5.0),
                        env=env,
                        cwd=str(home),
                        after=(MIGRATE, "redis", "statsd") if celery else (MIGRATE, "statsd"),
                        title=unit.replace("_", "-"),
                    )
                )
        count = replicas.get(Component.WORKERS.value, 0) if workers is None else workers
        for index in range(1, int(count) + 1):
            specs.append(self._worker_spec(name, index, env, tools))
        if replicas.get(Component.FLOWER.value, 0) > 0:
            specs.append(
                ProcessSpec(
                    name=Component.FLOWER.value,
                    component=Component.FLOWER.value,
                    argv=(
                        airflow,
                        "celery",
                        "flower",
                        "--hostname",
                        HOST,
                        "--port",
                        str(ports["flower"]),
                    ),
                    log_path=log(Component.FLOWER.value),
                    readiness=Readiness(
                        ReadyKind.HTTP, url=f"http://{HOST}:{ports['flower']}/healthcheck"
                    ),
                    env=env,
                    cwd=str(home),
                    after=("redis",),
                    title=f"Flower on {HOST}:{ports['flower']}",
                )
            )
        return specs

    def _worker_spec(
        self, name: str, index: int, env: Mapping[str, str], tools: Tools
    ) -> ProcessSpec:
        unit = worker_unit(index)
        return ProcessSpec(
            name=unit,
            component=Component.WORKERS.value,
            argv=(
                str(tools.airflow),
                "celery",
                "worker",
                "--skip-serve-logs",
                "--celery-hostname",
                f"{unit}@{name}",
                "--without-gossip",
                "--without-mingle",
            ),
            log_path=str(self.logs_dir(name) / f"{unit}.log"),
            readiness=Readiness(ReadyKind.LOG, pattern=WORKER_READY_LINE),
            env=env,
            cwd=str(self.home(name)),
            after=(MIGRATE, "redis"),
            # SIGTERM to the worker alone is Celery's warm shutdown: running tasks finish.
            stop_signal=int(signal.SIGTERM),
            stop_grace=self.settings.worker_grace,
            title=f"Celery worker {unit}",
        )

    def _save_state(self, name: str, state: Mapping[str, Any], specs: Sequence[ProcessSpec]) -> int:
        text = json.dumps({**state, "specs": specs_to_json(specs)}, indent=2, sort_keys=True)
        return int(_write_private(self.home(name) / "runtime.json", text + "\n"))

    def log_lock(self, deployment: str) -> asyncio.Lock:
        """Held while the deployment's log files are shipped, and while its folder is removed:
        once `remove` has returned, no line of it can reach Elasticsearch any more."""
        return self._log_locks.setdefault(deployment, asyncio.Lock())

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Stop the deployment's processes, drop its database and role, delete its folder."""
        await self.start()
        name = deployment.name
        home = self.home(name)
        writes = await self.supervisor.stop_group(name, grace=DELETE_GRACE)
        postgres = self._postgres()
        if postgres.initialised():
            await self._ensure_postgres()
            if await postgres.drop_database(database_name(name)):
                writes += 1
        async with self.log_lock(name):
            if home.exists():
                try:
                    await asyncio.to_thread(shutil.rmtree, home)
                except OSError as exc:
                    raise TransientError(UPSTREAM, f"removing {home}: {exc.strerror}") from exc
                writes += 1
        self._log_locks.pop(name, None)
        if not self._known_deployments():
            # The last deployment is gone: PostgreSQL stops (its data stays for the next one).
            await self.supervisor.stop_group(PG_GROUP)
        return Applied(writes)

    # --- observing ----------------------------------------------------------------------------

    async def status(self, deployment: DeploymentView) -> RuntimeStatus:
        """Each component's processes: desired, ready, state and why not ready."""
        await self.start()
        name = deployment.name
        desired = plan(deployment)
        state = _read_json(self.home(name) / "runtime.json")
        workers = (
            int(state["workers"])
            if isinstance(state, dict) and "workers" in state
            else desired["replicas"].get(Component.WORKERS.value, 0)
        )
        views = self.supervisor.views(name)
        statuses = [self._postgres_status()] if views else []
        migrate = [v for v in views if v.name == MIGRATE]
        if migrate and migrate[0].state is not UnitState.DONE:
            statuses.append(_aggregate(MIGRATE, 1, migrate))
        for component in components_for(Executor(desired["executor"])):
            units = [v for v in views if v.component == component.value]
            if component is Component.WORKERS:
                want = workers
            elif component is Component.API_SERVER:
                want = 1  # one process; the spec's replicas become its uvicorn workers
            else:
                want = int(desired["replicas"].get(component.value, 1))
            statuses.append(_aggregate(component.value, want, units))
        return RuntimeStatus(tuple(statuses))

    def _postgres_status(self) -> ComponentStatus:
        return _aggregate("postgresql", 1, self.supervisor.views(PG_GROUP))

    def metrics_address(self, deployment: str) -> str | None:
        """The deployment's statsd_exporter (its port is chosen now if it has none yet)."""
        try:
            ports = self.ensure_ports(deployment)
        except (OSError, IntegrationError):
            return None
        return f"{HOST}:{ports['statsd_web']}"

    # --- scaling ------------------------------------------------------------------------------

    async def scale(self, deployment: DeploymentView, request: ScaleRequest) -> Applied:
        """Set the number of Celery workers; leaving workers finish their tasks first.

        Workers named in `victims` leave first, then the highest-numbered ones. A leaving
        worker gets SIGTERM alone (Celery's warm shutdown: it takes no new task and exits when
        its running tasks are done, within `worker_grace`).
        """
        await self.start()
        if request.component != Component.WORKERS.value:
            raise PermanentError(
                UPSTREAM, f"the local runtime scales workers only, not {request.component}"
            )
        if Executor(deployment.executor) is not Executor.CELERY:
            raise PermanentError(UPSTREAM, f"{deployment.name} runs LocalExecutor: no workers")
        name = deployment.name
        path = self.home(name) / "runtime.json"
        state = _read_json(path)
        if not isinstance(state, dict):
            raise TransientError(UPSTREAM, f"deployment {name} has not been applied yet")
        specs = specs_from_json(state.get("specs") or [])
        current = [s for s in specs if s.component == Component.WORKERS.value]
        target = max(0, request.replicas)
        if target == len(current):
            return Applied(0)
        others = [s for s in specs if s.component != Component.WORKERS.value]
        if target < len(current):
            names = [s.name for s in current]
            leaving = [v for v in request.victims if v in names]
            for spec in sorted(current, key=lambda s: -int(s.name.removeprefix(WORKER_PREFIX))):
                if len(leaving) >= len(current) - target:
                    break
                if spec.name not in leaving:
                    leaving.append(spec.name)
            kept = [s for s in current if s.name not in leaving]
        else:
            tools = await asyncio.to_thread(
                find_tools, self.settings, state["plan"]["airflow_version"]
            )
            env = dict(current[0].env) if current else self._airflow_env(name, state["plan"], tools)
            used = {s.name for s in current} | {
                v.name
                for v in self.supervisor.views(name)
                if v.component == Component.WORKERS.value
            }
            kept = list(current)
            index = 1
            while len(kept) < target:
                if worker_unit(index) not in used:
                    kept.append(self._worker_spec(name, index, env, tools))
                index += 1
        kept.sort(key=lambda s: int(s.name.removeprefix(WORKER_PREFIX)))
        new_specs = others[: _flower_position(others)] + kept + others[_flower_position(others) :]
        state = {**state, "workers": target}
        self._save_state(name, state, new_specs)
        changes = self.supervisor.ensure(name, new_specs, self.home(name) / "run")
        return Applied(changes, f"workers: {len(current)} → {target}")

    async def worker_load(self, deployment: DeploymentView) -> Sequence[WorkerLoad]:
        """Running tasks per worker (unit name), from Flower; empty when Flower cannot tell."""
        url = self.flower_url(deployment.name)
        if url is None:
            return []
        try:
            active = await flower_active_tasks(url)
        except IntegrationError:
            return []
        # Flower still lists a worker that left (or is leaving); only the running ones count.
        state = _read_json(self.home(deployment.name) / "runtime.json")
        specs = specs_from_json(state.get("specs") or []) if isinstance(state, dict) else []
        current = {s.name for s in specs if s.component == Component.WORKERS.value}
        loads = [
            WorkerLoad(worker=worker.split("@", 1)[0], running_tasks=count)
            for worker, count in active.items()
            if worker.split("@", 1)[0] in current
        ]
        return sorted(loads, key=lambda w: w.worker)

    def memory(self, deployment: str) -> dict[str, Memory]:
        """Resident memory per component of the deployment (and of the shared PostgreSQL)."""
        sessions: dict[str, list[int]] = {}
        for view in [*self.supervisor.views(PG_GROUP), *self.supervisor.views(deployment)]:
            if view.pid is not None:
                sessions.setdefault(view.component, []).append(view.pid)
        return {component: tree_memory(pids) for component, pids in sessions.items()}

    # --- progress -----------------------------------------------------------------------------

    def progress(self, deployment: str) -> list[str]:
        """What the deployment's processes are doing or waiting for, one line per process."""
        lines = []
        for view in [*self.supervisor.views(PG_GROUP), *self.supervisor.views(deployment)]:
            if view.state in (UnitState.RUNNING, UnitState.DONE):
                continue
            lines.append(
                f"{view.name}: {view.state.value}" + (f" ({view.reason})" if view.reason else "")
            )
        return lines

    def failure_report(self, deployment: str, lines: int = 15) -> str:
        """The log tails of the processes that are crash-looping, to say clearly what failed."""
        parts = []
        for view in [*self.supervisor.views(PG_GROUP), *self.supervisor.views(deployment)]:
            if view.state in (UnitState.CRASHLOOP, UnitState.BACKOFF):
                unit = self.supervisor.unit(view.group, view.name)
                path = unit.spec.log_path if unit else ""
                parts.append(f"--- {view.name}: {view.reason}\n{log_tail(path, lines)}")
        return "\n".join(parts)


def _flower_position(specs: Sequence[ProcessSpec]) -> int:
    for index, spec in enumerate(specs):
        if spec.component == Component.FLOWER.value:
            return index
    return len(specs)


def _aggregate(component: str, desired: int, units: Sequence[UnitView]) -> ComponentStatus:
    """One component's status from its processes'."""
    live = [u for u in units if u.state is not UnitState.STOPPING]
    ready = sum(1 for u in live if u.state in (UnitState.RUNNING, UnitState.DONE))
    leaving = len(units) - len(live)
    if desired == 0 and not live:
        reason = f"{leaving} leaving (warm shutdown)" if leaving else ""
        return ComponentStatus(component, 0, 0, ComponentState.STOPPED, reason)
    if not units:
        return ComponentStatus(component, desired, 0, ComponentState.STOPPED, "not started")
    if ready >= desired:
        reason = f"{leaving} leaving (warm shutdown)" if leaving else ""
        return ComponentStatus(component, desired, ready, ComponentState.RUNNING, reason)
    crashing = [u for u in live if u.state in (UnitState.CRASHLOOP,)]
    if crashing:
        first = crashing[0]
        return ComponentStatus(
            component, desired, ready, ComponentState.CRASHLOOP, f"{first.name}: {first.reason}"
        )
    waiting = [u for u in live if u.state not in (UnitState.RUNNING, UnitState.DONE)]
    reason = f"{waiting[0].name}: {waiting[0].reason}" if waiting else "starting"
    return ComponentStatus(component, desired, ready, ComponentState.STARTING, reason)
