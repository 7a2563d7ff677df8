"""The log data stream's index template, the comparison that saves writes, and the retention
plan used where the cluster has no data stream lifecycle."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.settings import ElasticsearchSettings
from app.integrations.elasticsearch import (
    BackingIndex,
    ElasticsearchClient,
    error_reason,
    template_matches,
)
from app.observability.elasticsearch_target import (
    KEEP_LOGS,
    ElasticsearchTarget,
    RetentionPlan,
    index_template,
    log_data_stream,
    plan_retention,
    rollover_age,
)
from app.provisioning.targets import DeploymentView

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def view(name: str = "etl", retention: int = 15, **extra: Any) -> DeploymentView:
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


def stored_shape(template: dict[str, Any]) -> dict[str, Any]:
    """`template` as Elasticsearch 8.19 hands it back (seen with GET /_index_template)."""
    stored = copy.deepcopy(template)
    stored["composed_of"] = []
    stored["data_stream"] = {"hidden": False, "allow_custom_routing": False}
    stored["template"]["lifecycle"] = {"enabled": True, **stored["template"]["lifecycle"]}
    # Settings come back nested with string values, mapping keys in another order.
    stored["template"]["mappings"]["properties"] = dict(
        reversed(list(stored["template"]["mappings"]["properties"].items()))
    )
    return stored


# -- the template -----------------------------------------------------------------------------


def test_template_claims_exactly_the_deployments_data_stream() -> None:
    template = index_template("etl", "data-team", 15)
    assert template["index_patterns"] == ["airflow-logs-etl"]
    assert template["data_stream"] == {}
    assert log_data_stream("etl") == "airflow-logs-etl"


def test_template_maps_the_fields_airflow_writes() -> None:
    properties = index_template("etl", "data-team", 15)["template"]["mappings"]["properties"]
    expected = {
        "log_id": "keyword",
        "offset": "long",
        "dag_id": "keyword",
        "task_id": "keyword",
        "run_id": "keyword",
        "map_index": "integer",
        "try_number": "integer",
        "level": "keyword",
        "event": "text",
        "message": "text",
        "timestamp": "date_nanos",
        "@timestamp": "date_nanos",
        "component": "keyword",
        "host": "keyword",
        "host.name": "keyword",
        "logger": "keyword",
        "chan": "keyword",
    }
    assert {name: properties[name]["type"] for name in expected} == expected
    assert properties["event"]["fields"]["keyword"]["type"] == "keyword"


def test_template_carries_the_retention_and_one_shard() -> None:
    inner = index_template("etl", "data-team", 7)["template"]
    assert inner["lifecycle"] == {"data_retention": "7d"}
    assert inner["settings"]["index"]["number_of_shards"] == "1"
    assert inner["settings"]["index"]["auto_expand_replicas"] == "0-1"


def test_render_is_the_template_as_stable_json() -> None:
    target = ElasticsearchTarget(ElasticsearchSettings())
    (artifact,) = target.render(view(retention=30))
    assert artifact.path == "elasticsearch/index-templates/airflow-logs-etl.json"
    assert json.loads(artifact.content) == index_template("etl", "data-team", 30)
    assert target.render(view(retention=30)) == [artifact]
    assert not target.configured()
    assert ElasticsearchTarget(ElasticsearchSettings(url="http://es:9200")).configured()


# -- comparing with what Elasticsearch stored --------------------------------------------------


def test_the_stored_shape_of_the_same_template_matches() -> None:
    desired = index_template("etl", "data-team", 15)
    stored = stored_shape(desired)
    stored["template"]["settings"] = {
        "index": {"number_of_shards": "1", "auto_expand_replicas": "0-1"}
    }
    assert template_matches(stored, desired)


def test_keys_a_newer_server_adds_do_not_count_as_a_change() -> None:
    desired = index_template("etl", "data-team", 15)
    stored = stored_shape(desired) | {"created_date_millis": 1, "modified_date_millis": 2}
    assert template_matches(stored, desired)


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t["template"]["lifecycle"].update(data_retention="30d"),
        lambda t: t["template"]["mappings"]["properties"]["offset"].update(type="keyword"),
        lambda t: t["template"]["mappings"]["properties"].pop("log_id"),
        lambda t: t["template"]["settings"]["index"].update(number_of_shards="3"),
        lambda t: t.update(index_patterns=["airflow-logs-etl*"]),
        lambda t: t.update(priority=100),
        lambda t: t["_meta"].update(workspace="other"),
        lambda t: t["data_stream"].update(hidden=True),
    ],
)
def test_any_change_to_what_sextant_manages_is_noticed(edit: Any) -> None:
    desired = index_template("etl", "data-team", 15)
    stored = stored_shape(desired)
    edit(stored)
    assert not template_matches(stored, desired)


# -- retention where the cluster does not enforce it -------------------------------------------


def backing(
    generation: int,
    *,
    created: timedelta,
    newest: timedelta | None,
    documents: int = 10,
    write: bool = False,
) -> BackingIndex:
    """A backing index created `created` ago whose newest document is `newest` old."""
    return BackingIndex(
        name=f".ds-airflow-logs-etl-2026.11.01-{generation:06d}",
        created_at=NOW - created,
        documents=0 if newest is None else documents,
        newest=None if newest is None else NOW - newest,
        write=write,
    )


@pytest.mark.parametrize(
    ("indices", "expected"),
    [
        pytest.param([], RetentionPlan(False, ()), id="no stream"),
        pytest.param(
            [backing(1, created=DAY, newest=None, write=True)],
            RetentionPlan(False, ()),
            id="empty write index",
        ),
        pytest.param(
            [backing(1, created=2 * DAY, newest=DAY, write=True)],
            RetentionPlan(False, ()),
            id="young write index",
        ),
        pytest.param(
            [backing(1, created=7 * DAY, newest=DAY, write=True)],
            RetentionPlan(True, ()),
            id="write index at rollover age",
        ),
        pytest.param(
            [backing(1, created=3 * DAY, newest=16 * DAY, write=True)],
            RetentionPlan(True, (".ds-airflow-logs-etl-2026.11.01-000001",)),
            id="write index wholly expired",
        ),
        pytest.param(
            [
                backing(1, created=30 * DAY, newest=16 * DAY),
                backing(2, created=16 * DAY, newest=9 * DAY),
                backing(3, created=2 * DAY, newest=DAY, write=True),
            ],
            RetentionPlan(False, (".ds-airflow-logs-etl-2026.11.01-000001",)),
            id="only the expired generation goes",
        ),
        pytest.param(
            [
                backing(1, created=20 * DAY, newest=None),
                backing(2, created=3 * DAY, newest=None),
                backing(3, created=DAY, newest=None, write=True),
            ],
            RetentionPlan(False, (".ds-airflow-logs-etl-2026.11.01-000001",)),
            id="empty old generations expire by creation",
        ),
        pytest.param(
            [backing(1, created=20 * DAY, newest=15 * DAY - timedelta(seconds=1))],
            RetentionPlan(False, ()),
            id="just inside the retention",
        ),
    ],
)
def test_retention_plan(indices: list[BackingIndex], expected: RetentionPlan) -> None:
    assert plan_retention(indices, now=NOW, keep=15 * DAY) == expected


@pytest.mark.parametrize(
    ("keep", "age"),
    [
        (timedelta(hours=6), timedelta(hours=1)),
        (DAY, DAY),
        (13 * DAY, DAY),
        (14 * DAY, 7 * DAY),
        (15 * DAY, 7 * DAY),
        (90 * DAY, 30 * DAY),
        (365 * DAY, 30 * DAY),
    ],
)
def test_rollover_age_follows_the_data_stream_lifecycle(keep: timedelta, age: timedelta) -> None:
    assert rollover_age(keep) == age


# -- the integration's guards ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["airflow-logs-etl*", "airflow-logs-etl,airflow-logs-etl-prod", "_all", "*", "Airflow", ""],
)
async def test_names_that_would_widen_a_request_are_refused_before_any_request(name: str) -> None:
    # Nothing listens on port 9; a request would fail with a connection error, not this.
    client = ElasticsearchClient("http://127.0.0.1:9", timeout=0.5)
    try:
        with pytest.raises(ValueError, match="exact Elasticsearch name"):
            await client.delete_data_stream(name)
        with pytest.raises(ValueError, match="exact Elasticsearch name"):
            await client.delete_index_template(name)
    finally:
        await client.aclose()


async def test_only_backing_indices_are_deleted_by_name() -> None:
    client = ElasticsearchClient("http://127.0.0.1:9", timeout=0.5)
    try:
        with pytest.raises(ValueError, match="not a backing index"):
            await client.delete_backing_indices(["airflow-logs-etl"])
    finally:
        await client.aclose()


async def test_keep_logs_removes_nothing_and_asks_nothing() -> None:
    target = ElasticsearchTarget(ElasticsearchSettings(url="http://127.0.0.1:9"))
    applied = await target.remove(view(**{KEEP_LOGS: True}))
    assert applied.writes == 0
    assert "kept" in applied.detail


def test_error_reason_keeps_type_and_reason_only() -> None:
    body = {
        "error": {
            "root_cause": [{"type": "x", "reason": "y"}],
            "type": "illegal_argument_exception",
            "reason": "unable to remove composable templates [t]",
            "caused_by": {"type": "z", "reason": "in use"},
            "stack_trace": "java.lang.IllegalArgumentException ..." * 100,
        },
        "status": 400,
    }
    assert error_reason(body) == (
        "illegal_argument_exception: unable to remove composable templates [t] (in use)"
    )
    assert error_reason({"error": "no handler found for uri [/_data_stream/x]"}) == (
        "no handler found for uri [/_data_stream/x]"
    )
    assert len(error_reason("x" * 10_000)) <= 300
