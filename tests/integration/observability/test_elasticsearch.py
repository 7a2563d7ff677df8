"""The "elasticsearch" target and integration against a real Elasticsearch (tests/harness).

The session's server is shared, so every test uses deployment names of its own. Documents are
shaped as Airflow 3 writes them (reference: airflow.md section 4.2: `event`, `level`,
`timestamp`, `log_id` from the default template, `offset` = line number in the upload path)
with the fields Sextant's FluentD pipeline adds (`@timestamp`, `component`, `host`, ...).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.core.settings import ElasticsearchSettings
from app.integrations.elasticsearch import ElasticsearchClient
from app.integrations.errors import PermanentError, TransientError
from app.observability.elasticsearch_target import (
    KEEP_LOGS,
    ElasticsearchTarget,
    index_template,
    log_data_stream,
)
from app.provisioning.targets import Applied, DeploymentView
from tests.harness.components import ElasticsearchServer
from tests.harness.process import free_port

_sequence = itertools.count()
RUN_ID = "manual__2026-11-24T10:00:00.123456+00:00"


def unique(stem: str) -> str:
    """A deployment name no other test of this session uses."""
    return f"{stem}{os.getpid() % 1000}x{next(_sequence)}"


def view(name: str, retention: int = 15, **extra: Any) -> DeploymentView:
    return DeploymentView(
        name=name,
        workspace="data-team",
        executor="CeleryExecutor",
        airflow_version="3.1.0",
        components={},
        generation=1,
        log_retention_days=retention,
        extra=extra,
    )


def airflow3_task_log(
    deployment: str, lines: int, *, start: datetime | None = None, try_number: int = 1
) -> list[dict[str, Any]]:
    """A task try's log as Airflow 3 uploads it, ending with the end-of-log mark."""
    start = start or datetime.now(UTC)
    log_id = f"sextant_parallel-sleep-{RUN_ID}--1-{try_number}"
    documents = []
    for offset in range(1, lines + 2):
        at = (start + timedelta(microseconds=offset)).isoformat().replace("+00:00", "Z")
        event = f"line {offset}" if offset <= lines else "end_of_log"
        documents.append(
            {
                "timestamp": at,
                "level": "info",
                "event": event,
                "logger": "airflow.task",
                "chan": "stdout",
                "log_id": log_id,
                "offset": offset,
                "dag_id": "sextant_parallel",
                "task_id": "sleep",
                "run_id": RUN_ID,
                "map_index": -1,
                "try_number": try_number,
                # Added on the way in by Sextant's FluentD pipeline.
                "@timestamp": at,
                "component": "workers",
                "host": "sextant-etl-worker-0",
                "deployment": deployment,
                "workspace": "data-team",
            }
        )
    return documents


@pytest.fixture
async def target(elasticsearch_server: ElasticsearchServer) -> AsyncIterator[ElasticsearchTarget]:
    """The target, configured for the session's Elasticsearch."""
    settings = ElasticsearchSettings(url=elasticsearch_server.url, timeout=5)
    target = ElasticsearchTarget(settings)
    yield target
    await target.aclose()


async def apply(target: ElasticsearchTarget, deployment: DeploymentView) -> Applied:
    return await target.apply(deployment, target.render(deployment))


def raw(server: ElasticsearchServer, method: str, path: str) -> httpx.Response:
    """A request straight to Elasticsearch, bypassing the code under test."""
    return httpx.request(method, server.url + path, timeout=10)


# -- the layout ---------------------------------------------------------------------------------


async def test_second_apply_of_an_unchanged_deployment_writes_nothing(
    target: ElasticsearchTarget, elasticsearch_server: ElasticsearchServer
) -> None:
    deployment = view(unique("idem"))
    first = await apply(target, deployment)
    second = await apply(target, deployment)
    assert first.writes == 1
    assert second.writes == 0
    stored = raw(elasticsearch_server, "GET", f"/_index_template/airflow-logs-{deployment.name}")
    template = stored.json()["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [f"airflow-logs-{deployment.name}"]
    assert template["template"]["lifecycle"]["data_retention"] == "15d"


async def test_a_changed_retention_is_written_once(target: ElasticsearchTarget) -> None:
    name = unique("ret")
    await apply(target, view(name, retention=15))
    assert (await apply(target, view(name, retention=3))).writes >= 1
    assert (await apply(target, view(name, retention=3))).writes == 0
    stored = await target.client().index_template(log_data_stream(name))
    assert stored is not None
    assert stored["template"]["lifecycle"]["data_retention"] == "3d"


async def test_airflow_3_documents_land_in_a_backing_index_with_the_templates_mappings(
    target: ElasticsearchTarget, elasticsearch_server: ElasticsearchServer
) -> None:
    name = unique("docs")
    stream = log_data_stream(name)
    await apply(target, view(name))
    client = target.client()
    documents = airflow3_task_log(name, 25)
    assert await client.index_documents(stream, documents, refresh=True) == 26

    (backing,) = await client.backing_indices(stream)
    assert backing.name.startswith(f".ds-{stream}-")
    assert backing.write
    assert backing.documents == 26
    mapping = raw(elasticsearch_server, "GET", f"/{backing.name}/_mapping").json()
    properties = mapping[backing.name]["mappings"]["properties"]
    template = index_template(name, "data-team", 15)["template"]["mappings"]["properties"]
    for field, spec in template.items():
        assert properties[field]["type"] == spec["type"], field

    # Airflow's read query (airflow.md section 4.3), on this deployment's stream only.
    log_id = documents[0]["log_id"]
    query = {
        "query": {
            "bool": {
                "filter": [{"range": {"offset": {"gt": 10}}}],
                "must": [{"match_phrase": {"log_id": log_id}}],
            }
        },
        "sort": [{"offset": "asc"}],
        "size": 1000,
    }
    hits = (await client.search(stream, query))["hits"]["hits"]
    assert [h["_source"]["offset"] for h in hits] == list(range(11, 27))
    assert hits[-1]["_source"]["event"] == "end_of_log"
    assert hits[0]["_index"] == backing.name
    assert await client.count(stream, {"term": {"event.keyword": "end_of_log"}}) == 1


async def test_airflow_2_and_ecs_shaped_documents_are_accepted_too(
    target: ElasticsearchTarget,
) -> None:
    name = unique("shapes")
    stream = log_data_stream(name)
    await apply(target, view(name))
    now = datetime.now(UTC).isoformat()
    airflow2 = {
        "@timestamp": now,
        "message": "Dependencies all met",
        "levelname": "INFO",
        "log_id": f"etl-extract-{RUN_ID}--1-1",
        "offset": 1755011166339518208,
        "host": "worker-1",
    }
    ecs = {
        "@timestamp": now,
        "message": "from filebeat",
        "host": {"name": "node-1"},
        "log": {"offset": 42},
        "kubernetes": {"labels": {"app": "airflow", "app.kubernetes.io/name": "airflow"}},
    }
    assert await target.client().index_documents(stream, [airflow2, ecs], refresh=True) == 2
    assert await target.client().count(stream, {"term": {"host.name": "node-1"}}) == 1
    assert await target.client().count(stream, {"term": {"host": "worker-1"}}) == 1


async def test_a_document_without_timestamp_is_refused_with_elasticsearchs_reason(
    target: ElasticsearchTarget,
) -> None:
    name = unique("nots")
    await apply(target, view(name))
    with pytest.raises(PermanentError, match="timestamp field \\[@timestamp\\] is missing"):
        await target.client().index_documents(log_data_stream(name), [{"event": "x"}])


# -- removal ------------------------------------------------------------------------------------


async def test_removing_a_deployment_leaves_one_sharing_its_prefix_intact(
    target: ElasticsearchTarget, elasticsearch_server: ElasticsearchServer
) -> None:
    etl = unique("etl")
    etl_prod = f"{etl}-prod"
    client = target.client()
    for name in (etl, etl_prod):
        await apply(target, view(name))
        await client.index_documents(
            log_data_stream(name), airflow3_task_log(name, 9), refresh=True
        )
    prod_template_before = await client.index_template(log_data_stream(etl_prod))

    removed = await target.remove(view(etl))

    assert removed.writes >= 1
    await client.refresh(log_data_stream(etl))
    assert await client.count(log_data_stream(etl)) == 0
    assert await client.count(log_data_stream(etl_prod)) == 10
    assert await client.index_template(log_data_stream(etl_prod)) == prod_template_before
    assert (await apply(target, view(etl_prod))).writes == 0
    etl_template = await client.index_template(log_data_stream(etl))
    if (await client.capabilities()).data_stream_api:
        assert etl_template is None
        assert (
            raw(elasticsearch_server, "GET", f"/_data_stream/airflow-logs-{etl}").status_code == 404
        )
    else:
        # Elasticsearch refuses to delete a stream's last (write) index and a template in use.
        assert etl_template is not None
        assert "cannot delete data streams" in removed.detail
        (left,) = await client.backing_indices(log_data_stream(etl))
        assert left.write
        assert left.documents == 0


async def test_removing_twice_and_removing_what_never_logged_both_succeed(
    target: ElasticsearchTarget,
) -> None:
    silent = unique("silent")
    await apply(target, view(silent))
    first = await target.remove(view(silent))
    assert "no data" in first.detail
    assert first.writes == 1
    assert await target.client().index_template(log_data_stream(silent)) is None
    assert (await target.remove(view(silent))).writes == 0


async def test_keep_logs_leaves_the_logs_and_template(target: ElasticsearchTarget) -> None:
    name = unique("keep")
    await apply(target, view(name))
    await target.client().index_documents(
        log_data_stream(name), airflow3_task_log(name, 4), refresh=True
    )
    applied = await target.remove(view(name, **{KEEP_LOGS: True}))
    assert applied.writes == 0
    assert await target.client().count(log_data_stream(name)) == 5
    assert await target.client().index_template(log_data_stream(name)) is not None


# -- retention ----------------------------------------------------------------------------------


async def test_retention_deletes_expired_backing_indices_where_the_cluster_does_not(
    target: ElasticsearchTarget,
) -> None:
    name = unique("age")
    stream = log_data_stream(name)
    deployment = view(name, retention=15)
    await apply(target, deployment)
    client = target.client()
    if (await client.capabilities()).data_stream_lifecycle:
        result = await target.enforce_retention(deployment, datetime.now(UTC))
        assert result.enforced_by_cluster
        return
    now = datetime.now(UTC)
    # A try that ran 20 days ago, shipped late: everything in the write index has expired.
    old = airflow3_task_log(name, 5, start=now - timedelta(days=20))
    await client.index_documents(stream, old, refresh=True)
    first = await target.enforce_retention(deployment, now)
    assert first.rolled_over
    assert len(first.deleted) == 1
    assert await client.count(stream) == 0

    # Fresh logs stay; a week later the write index rolls over, nothing is deleted.
    await client.index_documents(stream, airflow3_task_log(name, 5), refresh=True)
    assert (await target.enforce_retention(deployment, now)).deleted == ()
    week_later = await target.enforce_retention(deployment, now + timedelta(days=7, hours=1))
    assert week_later.rolled_over
    assert week_later.deleted == ()
    assert await client.count(stream) == 6

    # Logs of a week later; once the first fresh ones are past the retention, their
    # generation goes and the newer one stays.
    week = airflow3_task_log(name, 2, start=now + timedelta(days=7, hours=2))
    await client.index_documents(stream, week, refresh=True)
    later = await target.enforce_retention(deployment, now + timedelta(days=15, minutes=1))
    assert len(later.deleted) == 1
    await client.refresh(stream)
    assert await client.count(stream) == 3
    assert [i.documents for i in await client.backing_indices(stream)] == [3, 0]


async def test_the_capability_probe_agrees_with_the_api(
    target: ElasticsearchTarget, elasticsearch_server: ElasticsearchServer
) -> None:
    name = unique("probe")
    await apply(target, view(name))
    await target.client().index_documents(
        log_data_stream(name), airflow3_task_log(name, 1), refresh=True
    )
    capabilities = await target.client().capabilities()
    lifecycle = raw(
        elasticsearch_server, "GET", f"/_data_stream/{log_data_stream(name)}/_lifecycle"
    )
    stream = raw(elasticsearch_server, "GET", f"/_data_stream/{log_data_stream(name)}")
    assert capabilities.data_stream_lifecycle is (lifecycle.status_code == 200)
    assert capabilities.data_stream_api is (stream.status_code == 200)


# -- faults -------------------------------------------------------------------------------------


async def test_health_reports_the_cluster_status(target: ElasticsearchTarget) -> None:
    assert await target.health() in ("green", "yellow")


async def test_nothing_listening_is_a_transient_error_naming_the_server() -> None:
    port = free_port()
    client = ElasticsearchClient(f"http://elastic:s3cret@127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(TransientError) as caught:
            await client.health()
    finally:
        await client.aclose()
    message = str(caught.value)
    assert message.startswith("elasticsearch: cluster health: cannot connect to")
    assert f"http://127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "elastic:" not in message


async def test_elasticsearch_down_mid_apply_is_transient_and_the_next_apply_completes(
    target: ElasticsearchTarget, elasticsearch_server: ElasticsearchServer
) -> None:
    applied, pending = view(unique("before")), view(unique("during"))
    await apply(target, applied)  # also caches the cluster's capabilities
    elasticsearch_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await apply(target, pending)
        assert time.monotonic() - started < 30
        assert "cannot connect to" in str(caught.value)
        assert f"airflow-logs-{pending.name}" in str(caught.value)
    finally:
        elasticsearch_server.start()
    assert (await apply(target, pending)).writes == 1
    assert (await apply(target, applied)).writes == 0
