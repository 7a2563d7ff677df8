"""Start each real component the tests talk to, on 127.0.0.1 with data in a scratch folder.

One start function per component returns a small dataclass with what a test needs (URL, ports,
paths) and the ManagedProcess behind it, so a test can also stop, kill or restart the component.
The command lines follow /work/shared/reference/real-components.md; binaries come from the
places scripts/install-test-deps.sh installs them to.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.availability import (
    INSTALL_HINT,
    PG_BIN_DIR,
    ComponentUnavailable,
    find_binary,
    tools_dir,
)
from tests.harness.process import (
    ComponentStartError,
    ManagedProcess,
    ReadinessCheck,
    RunAs,
    free_port,
    http_ok,
    tcp_accepts,
)

HOST = "127.0.0.1"
# Elasticsearch refuses root; install-test-deps.sh creates this account for it.
TEST_USER = os.environ.get("SEXTANT_TEST_USER", "sextant-test")

DEFAULT_PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
"""

DEFAULT_ALERTMANAGER_CONFIG = """\
route:
  receiver: discard
receivers:
  - name: discard
"""


class ComponentDirs:
    """The scratch folders of one test session, reachable by the accounts components run as."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(cls) -> ComponentDirs:
        """Create a fresh root folder under the system temp dir."""
        root = Path(tempfile.mkdtemp(prefix="sextant-components-"))
        # pytest's own tmp_path is private to the user running pytest (mode 0700); components
        # running as `postgres` or the test user must be able to reach their sub-folder.
        root.chmod(0o711)
        return cls(root)

    def make(self, name: str, owner: RunAs | None = None) -> Path:
        """A new private folder for one component, owned by the account it runs as."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        if owner is not None:
            owner.give(path)
        return path

    def remove(self) -> None:
        """Delete every folder made in this session."""
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(kw_only=True)
class Component:
    """What every started component offers: its process, to stop, kill or restart it."""

    process: ManagedProcess

    def stop(self) -> None:
        """Stop gracefully (the data folder stays, so start() resumes on the same port)."""
        self.process.stop()

    def kill(self) -> None:
        """Kill with SIGKILL, as a crash would."""
        self.process.kill()

    def start(self) -> None:
        """Start again after stop() or kill(), on the same port, and wait until ready."""
        self.process.start()

    def restart(self) -> None:
        """Stop, then start on the same port."""
        self.process.restart()


# --- PostgreSQL and PgBouncer ----------------------------------------------------------------


@dataclass(kw_only=True)
class PostgresServer(Component):
    """A PostgreSQL 15 server with trust authentication for the `postgres` role."""

    host: str
    port: int
    user: str
    data_dir: Path
    socket_dir: Path
    psql_path: Path

    @property
    def url(self) -> str:
        """URL of the `postgres` database."""
        return self.dsn()

    def dsn(self, dbname: str = "postgres") -> str:
        """URL of database `dbname`, e.g. postgresql://postgres@127.0.0.1:PORT/dbname."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql and return its unaligned, tuples-only output."""
        return run_psql(self.psql_path, self.host, self.port, self.user, dbname, sql)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self.psql(f"CREATE DATABASE {quote_identifier(name)}")
        return self.dsn(name)


@dataclass(kw_only=True)
class PgBouncerServer(Component):
    """A PgBouncer in front of a PostgresServer; every database name is passed through."""

    host: str
    port: int
    user: str
    pool_mode: str
    config_path: Path
    psql_path: Path

    def dsn(self, dbname: str = "postgres") -> str:
        """URL of database `dbname` through the pooler."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql through the pooler (dbname `pgbouncer` reaches its admin console)."""
        return run_psql(self.psql_path, self.host, self.port, self.user, dbname, sql)


def quote_identifier(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def run_psql(psql: Path, host: str, port: int, user: str, dbname: str, sql: str) -> str:
    """Run one SQL string with psql; raise RuntimeError with psql's message when it fails."""
    command = [str(psql), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port)]
    command += ["-U", user, "-d", dbname, "-c", sql]
    # The caller's PG* variables (PGHOST, PGOPTIONS, ...) must not redirect the query.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed ({result.returncode}) on {sql!r}: {result.stderr.strip()}")
    return result.stdout.strip()


def start_postgres(dirs: ComponentDirs) -> PostgresServer:
    """Create a cluster with initdb and start PostgreSQL 15 (trust auth, fsync off)."""
    hint = f"apt-get install postgresql-15 ({INSTALL_HINT})"
    postgres = find_binary("postgresql", "postgres", hint=hint, preferred_dirs=[PG_BIN_DIR])
    # initdb and pg_isready must match the server's version: take them from the same folder.
    binaries = [postgres.parent]
    initdb = find_binary("postgresql", "initdb", hint=hint, preferred_dirs=binaries)
    pg_isready = find_binary("postgresql", "pg_isready", hint=hint, preferred_dirs=binaries)
    psql = find_binary("postgresql", "psql", hint=hint, preferred_dirs=binaries)
    account = _account("postgresql", "postgres", "the Debian postgresql package creates it")
    home = dirs.make("postgres", account)
    data = home / "data"
    env = _env(home, drop_prefix="PG")

    initdb_run = subprocess.run(
        [
            str(initdb),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-locale",
            "--encoding=UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        **_popen_account(account),
    )
    if initdb_run.returncode != 0:
        raise ComponentStartError(
            f"postgresql: initdb failed ({initdb_run.returncode}):\n"
            f"{initdb_run.stdout}{initdb_run.stderr}"
        )

    port = free_port()
    settings = {
        "listen_addresses": HOST,
        # Test data is disposable: trade durability for speed.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    argv: list[str | os.PathLike[str]] = [postgres, "-D", data, "-p", str(port), "-k", home]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]

    def accepting() -> bool:
        probe = [str(pg_isready), "-q", "-h", HOST, "-p", str(port), "-U", "postgres", "-t", "1"]
        return subprocess.run(probe, env=env, timeout=10).returncode == 0

    process = ManagedProcess(
        "postgresql",
        argv,
        log_path=home / "postgresql.log",
        ready=accepting,
        env=env,
        cwd=home,
        run_as=account,
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave;
        # SIGINT ("fast") disconnects them.
        stop_signal=signal.SIGINT,
    )
    process.start()
    return PostgresServer(
        process=process,
        host=HOST,
        port=port,
        user="postgres",
        data_dir=data,
        socket_dir=home,
        psql_path=psql,
    )


def start_pgbouncer(
    dirs: ComponentDirs, postgres: PostgresServer, pool_mode: str = "transaction"
) -> PgBouncerServer:
    """Start PgBouncer in front of `postgres` with trust auth and the given pool mode."""
    binary = find_binary(
        "pgbouncer", "pgbouncer", hint=f"apt-get install pgbouncer ({INSTALL_HINT})"
    )
    # PgBouncer refuses to run as root.
    account = _account("pgbouncer", "postgres", "the Debian postgresql package creates it")
    home = dirs.make("pgbouncer", account)
    port = free_port()
    auth_file = home / "userlist.txt"
    auth_file.write_text(f'"{postgres.user}" ""\n')
    config = home / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={postgres.host} port={postgres.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = {HOST}\n"
        f"listen_port = {port}\n"
        # No unix socket: it would go to /tmp under a fixed name and clash between sessions.
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {auth_file}\n"
        f"admin_users = {postgres.user}\n"
        f"pool_mode = {pool_mode}\n"
        "max_client_conn = 500\n"
        "default_pool_size = 20\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in (auth_file, config):
        if account is not None:
            account.give(path)
    process = ManagedProcess(
        "pgbouncer",
        [binary, config],
        log_path=home / "pgbouncer.log",
        ready=tcp_accepts(port),
        env=_env(home),
        cwd=home,
        run_as=account,
    )
    process.start()
    return PgBouncerServer(
        process=process,
        host=HOST,
        port=port,
        user=postgres.user,
        pool_mode=pool_mode,
        config_path=config,
        psql_path=postgres.psql_path,
    )


# --- Prometheus and Alertmanager -------------------------------------------------------------


@dataclass(kw_only=True)
class PrometheusServer(Component):
    """A Prometheus with the lifecycle API on; rewrite config_path and call reload()."""

    host: str
    port: int
    config_path: Path
    data_dir: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    def reload(self) -> None:
        """Re-read the configuration and rule files; RuntimeError with Prometheus's reason."""
        _post(f"{self.url}/-/reload")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant query and return `data.result`."""
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as response:
            result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        return result


@dataclass(kw_only=True)
class AlertmanagerServer(Component):
    """An Alertmanager without clustering; rewrite config_path and call reload()."""

    host: str
    port: int
    config_path: Path
    data_dir: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    def reload(self) -> None:
        """Re-read the configuration; RuntimeError with Alertmanager's reason."""
        _post(f"{self.url}/-/reload")


def start_prometheus(
    dirs: ComponentDirs,
    config: str = DEFAULT_PROMETHEUS_CONFIG,
    rule_files: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> PrometheusServer:
    """Start Prometheus with `config` (prometheus.yml text) and rule files given by name."""
    binary = find_binary(
        "prometheus", "prometheus", hint=f"apt-get install prometheus ({INSTALL_HINT})"
    )
    home = dirs.make("prometheus")
    # Rule files sit next to prometheus.yml, which resolves relative rule paths against itself.
    for name, text in (rule_files or {}).items():
        (home / name).write_text(text)
    if rule_files and "rule_files:" not in config:
        config += "rule_files:\n" + "".join(f"  - {name}\n" for name in rule_files)
    config_path = home / "prometheus.yml"
    config_path.write_text(config)
    data = home / "data"
    port = free_port()
    url = f"http://{HOST}:{port}"
    argv = [
        str(binary),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={HOST}:{port}",
        "--web.enable-lifecycle",
        *extra_args,
    ]
    process = ManagedProcess(
        "prometheus",
        argv,
        log_path=home / "prometheus.log",
        ready=http_ok(f"{url}/-/ready"),
        env=_env(home),
        cwd=home,
    )
    process.start()
    return PrometheusServer(
        process=process, host=HOST, port=port, config_path=config_path, data_dir=data
    )


def start_alertmanager(
    dirs: ComponentDirs, config: str = DEFAULT_ALERTMANAGER_CONFIG
) -> AlertmanagerServer:
    """Start Alertmanager with `config` (alertmanager.yml text) and no cluster port."""
    binary = find_binary(
        "alertmanager",
        "prometheus-alertmanager",
        hint=f"apt-get install prometheus-alertmanager ({INSTALL_HINT})",
    )
    home = dirs.make("alertmanager")
    config_path = home / "alertmanager.yml"
    config_path.write_text(config)
    data = home / "data"
    port = free_port()
    argv = [
        str(binary),
        f"--config.file={config_path}",
        f"--storage.path={data}",
        f"--web.listen-address={HOST}:{port}",
        # Without this Alertmanager opens a gossip port on 0.0.0.0:9094.
        "--cluster.listen-address=",
    ]
    process = ManagedProcess(
        "alertmanager",
        argv,
        log_path=home / "alertmanager.log",
        ready=http_ok(f"http://{HOST}:{port}/-/ready"),
        env=_env(home),
        cwd=home,
    )
    process.start()
    return AlertmanagerServer(
        process=process, host=HOST, port=port, config_path=config_path, data_dir=data
    )


# --- Redis and statsd_exporter ---------------------------------------------------------------


@dataclass(kw_only=True)
class RedisServer(Component):
    """A Redis server without persistence."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """URL of database 0, e.g. redis://127.0.0.1:PORT/0."""
        return f"redis://{self.host}:{self.port}/0"


def start_redis(dirs: ComponentDirs) -> RedisServer:
    """Start redis-server with persistence off."""
    binary = find_binary(
        "redis", "redis-server", hint=f"apt-get install redis-server ({INSTALL_HINT})"
    )
    home = dirs.make("redis")
    port = free_port()
    argv = [
        str(binary),
        "--bind",
        HOST,
        "--port",
        str(port),
        "--dir",
        str(home),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    process = ManagedProcess(
        "redis",
        argv,
        log_path=home / "redis.log",
        ready=_redis_pong(port),
        env=_env(home),
        cwd=home,
    )
    process.start()
    return RedisServer(process=process, host=HOST, port=port)


def _redis_pong(port: int) -> ReadinessCheck:
    def check() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return check


@dataclass(kw_only=True)
class StatsdExporter(Component):
    """A statsd_exporter: StatsD in on statsd_port (UDP and TCP), Prometheus metrics out."""

    host: str
    statsd_port: int
    web_port: int
    mapping_path: Path | None

    @property
    def url(self) -> str:
        """Base URL of the web interface."""
        return f"http://{self.host}:{self.web_port}"

    @property
    def metrics_url(self) -> str:
        """URL that Prometheus scrapes."""
        return f"{self.url}/metrics"

    def send(self, *lines: str) -> None:
        """Send StatsD lines (e.g. "airflow.scheduler_heartbeat:1|c") over UDP, as Airflow does."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for line in lines:
                sock.sendto(line.encode(), (self.host, self.statsd_port))

    def metrics(self) -> str:
        """The current /metrics text."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text: str = response.read().decode()
        return text


def start_statsd_exporter(
    dirs: ComponentDirs, mapping_path: Path | None = None, extra_args: Sequence[str] = ()
) -> StatsdExporter:
    """Start statsd_exporter, with a mapping file when given."""
    binary = find_binary(
        "statsd_exporter",
        "statsd_exporter",
        hint=f"{INSTALL_HINT} (go install github.com/prometheus/statsd_exporter)",
    )
    home = dirs.make("statsd-exporter")
    statsd_port = free_port(udp=True)
    web_port = free_port()
    argv = [
        str(binary),
        f"--statsd.listen-udp={HOST}:{statsd_port}",
        f"--statsd.listen-tcp={HOST}:{statsd_port}",
        f"--web.listen-address={HOST}:{web_port}",
        *([f"--statsd.mapping-config={mapping_path}"] if mapping_path else []),
        *extra_args,
    ]
    process = ManagedProcess(
        "statsd_exporter",
        argv,
        log_path=home / "statsd_exporter.log",
        ready=http_ok(f"http://{HOST}:{web_port}/metrics"),
        env=_env(home),
        cwd=home,
    )
    process.start()
    return StatsdExporter(
        process=process,
        host=HOST,
        statsd_port=statsd_port,
        web_port=web_port,
        mapping_path=mapping_path,
    )


# --- Elasticsearch ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class ElasticsearchServer(Component):
    """A single-node Elasticsearch without security (plain HTTP, no credentials)."""

    host: str
    port: int
    transport_port: int
    version: str
    data_dir: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"


def elasticsearch_home() -> Path:
    """The unpacked server: SEXTANT_ELASTICSEARCH_HOME, else the version the install chose."""
    if os.environ.get("SEXTANT_ELASTICSEARCH_HOME"):
        home = Path(os.environ["SEXTANT_ELASTICSEARCH_HOME"])
    else:
        version_file = tools_dir() / "elasticsearch.version"
        if not version_file.is_file():
            raise ComponentUnavailable(
                "elasticsearch",
                f"{version_file} not found; {INSTALL_HINT} (fetches the server from Maven Central)",
            )
        home = tools_dir() / f"elasticsearch-{version_file.read_text().strip()}"
    if not os.access(home / "bin" / "elasticsearch", os.X_OK):
        raise ComponentUnavailable(
            "elasticsearch", f"{home}/bin/elasticsearch not found; {INSTALL_HINT}"
        )
    return home


def start_elasticsearch(dirs: ComponentDirs) -> ElasticsearchServer:
    """Start a single-node Elasticsearch with a 512 MB heap; takes 10-20 s."""
    install = elasticsearch_home()
    java_home = _java_home()
    account = _account("elasticsearch", TEST_USER, f"{INSTALL_HINT} creates it")
    work = dirs.make("elasticsearch", account)
    # The tools dir usually sits in root's home (mode 0700), out of the test user's reach:
    # hard links give it a reachable copy in milliseconds.
    home = install if account is None else _linked_copy(install, work / "home")
    # A private config folder: Elasticsearch writes its keystore there on first start.
    config = work / "config"
    shutil.copytree(install / "config", config)
    data, logs, tmp = work / "data", work / "logs", work / "tmp"
    for path in (data, logs, tmp):
        path.mkdir()
    if account is not None:
        for path in (config, *config.rglob("*"), data, logs, tmp):
            account.give(path)

    port, transport_port = free_port(), free_port()
    settings: dict[str, object] = {
        "network.host": HOST,
        "http.port": port,
        "transport.port": transport_port,
        "discovery.type": "single-node",
        "path.data": data,
        "path.logs": logs,
        # The distribution carries x-pack-security, which would otherwise switch on TLS and
        # passwords at first start.
        "xpack.security.enabled": "false",
        # A nearly full disk on a developer machine must not make indices read-only.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        # Lets tests clean up with wildcards (DELETE /sextant-*).
        "action.destructive_requires_name": "false",
    }
    argv: list[str | os.PathLike[str]] = [home / "bin" / "elasticsearch"]
    for key, value in settings.items():
        argv += ["-E", f"{key}={value}"]
    env = _env(work) | {
        "ES_JAVA_HOME": str(java_home),
        "ES_JAVA_OPTS": "-Xms512m -Xmx512m",
        "ES_PATH_CONF": str(config),
        "ES_TMPDIR": str(tmp),
    }
    url = f"http://{HOST}:{port}"
    process = ManagedProcess(
        "elasticsearch",
        argv,
        log_path=work / "elasticsearch.log",
        ready=http_ok(f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s", _health_ok),
        env=env,
        cwd=work,
        run_as=account,
        start_timeout=180,
        stop_timeout=30,
    )
    process.start()
    return ElasticsearchServer(
        process=process,
        host=HOST,
        port=port,
        transport_port=transport_port,
        version=_elasticsearch_version(install),
        data_dir=data,
    )


def _health_ok(body: bytes) -> bool:
    try:
        return bool(json.loads(body).get("status") in ("yellow", "green"))
    except ValueError:
        return False


def _elasticsearch_version(install: Path) -> str:
    # `GET /` is served by the rest-root module, which this distribution lacks; the server
    # jar's name carries the version.
    for jar in (install / "lib").glob("elasticsearch-[0-9]*.jar"):
        return jar.stem.removeprefix("elasticsearch-")
    return "unknown"


def _java_home() -> Path:
    for variable in ("ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    java = shutil.which("java")
    if java is None:
        raise ComponentUnavailable(
            "elasticsearch",
            "no Java 17+ (ES_JAVA_HOME, JAVA_HOME or java on PATH); "
            "apt-get install openjdk-17-jre-headless",
        )
    return Path(os.path.realpath(java)).parent.parent


def _linked_copy(source: Path, target: Path) -> Path:
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another filesystem, or links not permitted
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
    return target


# --- shared ----------------------------------------------------------------------------------


def _account(component: str, user: str, origin: str) -> RunAs | None:
    """The account to run `component` as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return RunAs.lookup(user)
    except KeyError:
        raise ComponentUnavailable(
            component, f"running as root needs the unprivileged user {user!r} ({origin})"
        ) from None


def _popen_account(account: RunAs | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _env(home: Path, drop_prefix: str | None = None) -> dict[str, str]:
    # HOME points into the scratch folder: root's home is not readable by the component's
    # account, and nothing should write into the developer's home.
    env = {
        key: value
        for key, value in os.environ.items()
        if drop_prefix is None or not key.startswith(drop_prefix)
    }
    env["HOME"] = str(home)
    return env


def _post(url: str) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30):
            pass
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace").strip()
        raise RuntimeError(f"POST {url} answered {error.code}: {body}") from error
