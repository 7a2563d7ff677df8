"""Each real component starts, answers, and can be stopped and started again on its port."""

from __future__ import annotations

import json
import os
import pwd
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.availability import tools_dir
from tests.harness.components import (
    TEST_USER,
    AlertmanagerServer,
    ElasticsearchServer,
    PgBouncerServer,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    StatsdExporter,
)
from tests.harness.plugin import ComponentFactory
from tests.harness.process import ManagedProcess, tcp_accepts

RUNNING_AS_ROOT = os.geteuid() == 0


def get_json(url: str) -> Any:
    """GET `url` and decode the JSON answer."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def send_json(method: str, url: str, body: object) -> Any:
    """Send a JSON body and decode the JSON answer."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    """Wait until `check()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.2)


def owner_of(process: ManagedProcess) -> str:
    """User name the process runs as."""
    assert process.pid is not None
    status = Path(f"/proc/{process.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    return pwd.getpwuid(uid).pw_name


# --- PostgreSQL and PgBouncer ----------------------------------------------------------------


def test_postgres_answers_queries(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("select 1") == "1"
    assert postgres_server.psql("show server_version").startswith("15.")
    assert postgres_server.psql("show fsync") == "off"


def test_postgres_creates_a_database_and_returns_its_url(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("harness_created")

    assert url == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/harness_created"
    assert postgres_server.dsn("harness_created") == url
    assert postgres_server.psql("select current_database()", "harness_created") == "harness_created"


@pytest.mark.skipif(not RUNNING_AS_ROOT, reason="only root switches accounts")
def test_postgres_runs_as_the_postgres_user_under_root(postgres_server: PostgresServer) -> None:
    assert owner_of(postgres_server.process) == "postgres"


def test_pgbouncer_passes_queries_through_to_postgres(
    pgbouncer_server: PgBouncerServer, postgres_server: PostgresServer
) -> None:
    postgres_server.create_database("through_pgbouncer")

    answer = pgbouncer_server.psql("select current_database()", "through_pgbouncer")

    assert answer == "through_pgbouncer"
    assert pgbouncer_server.dsn("x") == f"postgresql://postgres@127.0.0.1:{pgbouncer_server.port}/x"
    assert "through_pgbouncer" in pgbouncer_server.psql("show pools", "pgbouncer")
    if RUNNING_AS_ROOT:
        assert owner_of(pgbouncer_server.process) == "postgres"


def test_postgres_restarts_on_the_same_port_and_keeps_its_data(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.create_database("survives_restart")
    port = postgres_server.port

    postgres_server.stop()
    try:
        assert not tcp_accepts(port)()
    finally:
        postgres_server.start()

    assert postgres_server.psql("select 1", "survives_restart") == "1"


# --- Prometheus and Alertmanager -------------------------------------------------------------

RULES = """\
groups:
  - name: harness
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
"""


def rule_groups(prometheus: PrometheusServer) -> list[str]:
    """Names of the rule groups Prometheus has loaded."""
    groups = get_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
    return [group["name"] for group in groups]


def test_prometheus_is_ready_and_answers_queries(prometheus_server: PrometheusServer) -> None:
    with urllib.request.urlopen(f"{prometheus_server.url}/-/ready", timeout=5) as response:
        assert response.status == 200

    assert prometheus_server.query("vector(42)")[0]["value"][1] == "42"


def test_prometheus_loads_rule_files_given_at_start(
    prometheus_factory: ComponentFactory[..., PrometheusServer],
) -> None:
    prometheus = prometheus_factory(rule_files={"harness.rules.yml": RULES})

    assert rule_groups(prometheus) == ["harness"]
    assert "rule_files:" in prometheus.config_path.read_text()


def test_prometheus_reload_applies_a_new_config(prometheus_server: PrometheusServer) -> None:
    (prometheus_server.config_path.parent / "later.rules.yml").write_text(RULES)
    config = prometheus_server.config_path.read_text() + "rule_files:\n  - later.rules.yml\n"
    prometheus_server.config_path.write_text(config)

    prometheus_server.reload()

    assert rule_groups(prometheus_server) == ["harness"]


def test_prometheus_reload_of_a_broken_config_says_why(prometheus_server: PrometheusServer) -> None:
    prometheus_server.config_path.write_text("scrape_configs: not-a-list\n")

    with pytest.raises(RuntimeError, match=r"(?s)answered 500: .*`not-a-list`"):
        prometheus_server.reload()


def test_prometheus_stopped_then_started_serves_on_the_same_port(
    prometheus_server: PrometheusServer,
) -> None:
    url = prometheus_server.url

    prometheus_server.stop()
    assert not tcp_accepts(prometheus_server.port)()
    prometheus_server.start()

    assert prometheus_server.url == url
    assert prometheus_server.query("vector(1)")[0]["value"][1] == "1"


def test_prometheus_scrapes_statsd_exporter(
    prometheus_factory: ComponentFactory[..., PrometheusServer], statsd_exporter: StatsdExporter
) -> None:
    scrape = (
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: statsd\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{statsd_exporter.web_port}']}}]\n"
    )
    prometheus = prometheus_factory(config=scrape)

    statsd_exporter.send("harness.heartbeat:1|c")

    eventually(lambda: bool(prometheus.query("harness_heartbeat")))
    assert prometheus.query("harness_heartbeat")[0]["metric"]["job"] == "statsd"


def test_alertmanager_is_ready_without_a_cluster_port(
    alertmanager_server: AlertmanagerServer,
) -> None:
    status = get_json(f"{alertmanager_server.url}/api/v2/status")

    assert status["cluster"]["status"] == "disabled"
    assert "discard" in status["config"]["original"]


def test_alertmanager_reload_applies_a_new_config(
    alertmanager_factory: ComponentFactory[..., AlertmanagerServer],
) -> None:
    alertmanager = alertmanager_factory(
        config="route:\n  receiver: first\nreceivers:\n  - name: first\n"
    )
    alertmanager.config_path.write_text(
        "route:\n  receiver: second\nreceivers:\n  - name: second\n"
    )

    alertmanager.reload()

    assert "second" in get_json(f"{alertmanager.url}/api/v2/status")["config"]["original"]


# --- Redis and statsd_exporter ---------------------------------------------------------------


def redis_command(redis: RedisServer, command: bytes) -> bytes:
    """Send one inline command and return the raw reply."""
    with socket.create_connection((redis.host, redis.port), timeout=5) as connection:
        connection.sendall(command + b"\r\n")
        return connection.recv(1024)


def test_redis_answers_and_restarts_empty_on_the_same_port(redis_server: RedisServer) -> None:
    assert redis_command(redis_server, b"SET queue 3") == b"+OK\r\n"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"

    redis_server.kill()
    redis_server.start()

    # Persistence is off: a restarted Redis has forgotten everything.
    assert redis_command(redis_server, b"GET queue") == b"$-1\r\n"


def test_statsd_exporter_applies_its_mapping_over_udp_and_tcp(
    statsd_exporter_factory: ComponentFactory[..., StatsdExporter], tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.yml"
    mapping.write_text(
        "mappings:\n"
        "  - match: airflow.dagrun.duration.success.*\n"
        "    name: airflow_dagrun_duration_success\n"
        "    labels:\n"
        "      dag_id: $1\n"
    )
    exporter = statsd_exporter_factory(mapping_path=mapping)

    exporter.send("airflow.dagrun.duration.success.etl:1500|ms")
    with socket.create_connection((exporter.host, exporter.statsd_port), timeout=5) as tcp:
        tcp.sendall(b"harness.tcp_gauge:7|g\n")

    eventually(
        lambda: 'airflow_dagrun_duration_success_count{dag_id="etl"} 1' in exporter.metrics()
    )
    eventually(lambda: "harness_tcp_gauge 7" in exporter.metrics())


# --- Elasticsearch ---------------------------------------------------------------------------


def test_elasticsearch_is_the_installed_version_and_healthy(
    elasticsearch_server: ElasticsearchServer,
) -> None:
    health = get_json(f"{elasticsearch_server.url}/_cluster/health")

    assert health["status"] in ("green", "yellow")
    version_file = tools_dir() / "elasticsearch.version"
    if version_file.exists() and not os.environ.get("SEXTANT_ELASTICSEARCH_HOME"):
        assert elasticsearch_server.version == version_file.read_text().strip()
    assert elasticsearch_server.version.startswith("8.")
    if RUNNING_AS_ROOT:
        assert owner_of(elasticsearch_server.process) == TEST_USER


def test_elasticsearch_indexes_and_finds_a_document_as_itself(
    elasticsearch_server: ElasticsearchServer,
) -> None:
    url = f"{elasticsearch_server.url}/harness-logs"
    send_json("PUT", f"{url}/_doc/1?refresh=true", {"message": "task instance succeeded"})

    request = urllib.request.Request(f"{url}/_search?q=message:succeeded")
    with urllib.request.urlopen(request, timeout=10) as response:
        # elasticsearch-py refuses servers that do not send this header.
        assert response.headers["X-Elastic-Product"] == "Elasticsearch"
        hits = json.load(response)["hits"]["hits"]

    assert [hit["_id"] for hit in hits] == ["1"]
