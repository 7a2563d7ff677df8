"""pytest fixtures that start the real components, and failure reports that show their logs.

Loaded with `pytest_plugins = ["tests.harness.plugin"]`. The slow servers (PostgreSQL,
Elasticsearch) live for the whole session; tests isolate themselves with their own database or
index names, and a test that stops one must start it again. The fast ones (Prometheus,
Alertmanager, Redis, PgBouncer, statsd_exporter; each ready in well under a second) are started
per test, so a test may reconfigure, stop or kill them freely.

A missing component skips the test, or fails it when SEXTANT_REQUIRE_REAL=1; a component that
does not start always fails the test, with the tail of its log.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Concatenate, Generic, ParamSpec, TypeVar

import pytest

from tests.harness.availability import ComponentUnavailable, report_unavailable
from tests.harness.components import (
    AlertmanagerServer,
    Component,
    ComponentDirs,
    ElasticsearchServer,
    PgBouncerServer,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    StatsdExporter,
    start_alertmanager,
    start_elasticsearch,
    start_pgbouncer,
    start_postgres,
    start_prometheus,
    start_redis,
    start_statsd_exporter,
)
from tests.harness.kubernetes import KubeApiServer, start_kube_apiserver
from tests.harness.process import LOG_TAIL_LINES, ComponentStartError, ManagedProcess

P = ParamSpec("P")
C = TypeVar("C", bound=Component)


def start_component(start: Callable[[], C]) -> C:
    """Run `start`; a missing component skips (or fails), a failed start fails the test."""
    try:
        return start()
    except ComponentUnavailable as error:
        report_unavailable(error)
    except ComponentStartError as error:
        pytest.fail(str(error), pytrace=False)


class ComponentFactory(Generic[P, C]):
    """Starts components of one kind with a test's own arguments; stops them at teardown."""

    def __init__(
        self, start: Callable[Concatenate[ComponentDirs, P], C], dirs: ComponentDirs
    ) -> None:
        self._start = start
        self._dirs = dirs
        self.started: list[C] = []

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> C:
        """Start one more component; the arguments are those of the start function."""
        component = start_component(lambda: self._start(self._dirs, *args, **kwargs))
        self.started.append(component)
        return component

    def stop_all(self) -> None:
        """Stop every component this factory started."""
        for component in reversed(self.started):
            component.stop()


@pytest.fixture(scope="session")
def component_dirs() -> Iterator[ComponentDirs]:
    """Scratch folders for this session's components, removed at the end of the session."""
    dirs = ComponentDirs.create()
    yield dirs
    dirs.remove()


@pytest.fixture(scope="session")
def postgres_server(component_dirs: ComponentDirs) -> Iterator[PostgresServer]:
    """PostgreSQL 15 for the session; call create_database(name) for a database of your own."""
    server = start_component(lambda: start_postgres(component_dirs))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def elasticsearch_server(component_dirs: ComponentDirs) -> Iterator[ElasticsearchServer]:
    """Single-node Elasticsearch for the session (10-20 s to start); use unique index names."""
    server = start_component(lambda: start_elasticsearch(component_dirs))
    yield server
    server.stop()


@pytest.fixture
def pgbouncer_server(
    component_dirs: ComponentDirs, postgres_server: PostgresServer
) -> Iterator[PgBouncerServer]:
    """PgBouncer (transaction pooling) in front of the session's PostgreSQL, for one test."""
    server = start_component(lambda: start_pgbouncer(component_dirs, postgres_server))
    yield server
    server.stop()


@pytest.fixture
def redis_server(component_dirs: ComponentDirs) -> Iterator[RedisServer]:
    """An empty Redis for one test."""
    server = start_component(lambda: start_redis(component_dirs))
    yield server
    server.stop()


@pytest.fixture
def prometheus_factory(
    component_dirs: ComponentDirs,
) -> Iterator[ComponentFactory[..., PrometheusServer]]:
    """Call with (config=YAML text, rule_files={name: YAML text}, extra_args=[...])."""
    factory = ComponentFactory(start_prometheus, component_dirs)
    yield factory
    factory.stop_all()


@pytest.fixture
def prometheus_server(
    prometheus_factory: ComponentFactory[..., PrometheusServer],
) -> PrometheusServer:
    """A Prometheus for one test, with 1 s scrape/evaluation intervals and nothing to scrape."""
    return prometheus_factory()


@pytest.fixture
def alertmanager_factory(
    component_dirs: ComponentDirs,
) -> Iterator[ComponentFactory[..., AlertmanagerServer]]:
    """Call with (config=alertmanager.yml text)."""
    factory = ComponentFactory(start_alertmanager, component_dirs)
    yield factory
    factory.stop_all()


@pytest.fixture
def alertmanager_server(
    alertmanager_factory: ComponentFactory[..., AlertmanagerServer],
) -> AlertmanagerServer:
    """An Alertmanager for one test whose single route discards every alert."""
    return alertmanager_factory()


@pytest.fixture
def statsd_exporter_factory(
    component_dirs: ComponentDirs,
) -> Iterator[ComponentFactory[..., StatsdExporter]]:
    """Call with (mapping_path=Path to a mapping YAML, extra_args=[...])."""
    factory = ComponentFactory(start_statsd_exporter, component_dirs)
    yield factory
    factory.stop_all()


@pytest.fixture
def statsd_exporter(
    statsd_exporter_factory: ComponentFactory[..., StatsdExporter],
) -> StatsdExporter:
    """A statsd_exporter for one test, without a mapping file."""
    return statsd_exporter_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Append the log tail of every component a failed test used to its report."""
    report = yield
    if report.failed:
        for process in processes_used_by(item):
            title = f"{process.name} log (last {LOG_TAIL_LINES} lines of {process.log_path})"
            report.sections.append((title, process.log_tail()))
    return report


def processes_used_by(item: pytest.Item) -> list[ManagedProcess]:
    """The processes behind the component fixtures and factories that `item` requested."""
    found: dict[int, ManagedProcess] = {}
    # funcargs holds every fixture value of the test, including those requested indirectly.
    for value in getattr(item, "funcargs", {}).values():
        candidates = value.started if isinstance(value, ComponentFactory) else [value]
        for candidate in candidates:
            if isinstance(candidate, Component):
                found[id(candidate.process)] = candidate.process
    return list(found.values())


@pytest.fixture(scope="session")
def kube_apiserver(component_dirs: ComponentDirs) -> Iterator[KubeApiServer]:
    """A real kube-apiserver with embedded etcd for the session (~3 s to start); no controllers.

    Use a namespace of your own per test: deleted namespaces stay Terminating, see
    tests/harness/kube/README.md.
    """
    server = start_component(lambda: start_kube_apiserver(component_dirs))
    yield server
    server.stop()
