"""The "elasticsearch" provisioning target: one data stream of logs per deployment, with its
retention.

Layout: every deployment writes task and component logs into the data stream
`airflow-logs-<deployment>`, created on first write from a composable index template of the same
name. One stream per deployment keeps the shard count near one per deployment (instead of one
per deployment per day) and lets Airflow's reader target exactly one deployment's logs instead
of `_all`. The template's pattern is the exact stream name, without a wildcard: a pattern
`airflow-logs-etl*` would also claim `airflow-logs-etl-prod`.

Retention: the template carries `lifecycle.data_retention` (the deployment's
`log_retention_days`), which a cluster with data stream lifecycle enforces by itself; for
streams that already exist, `apply` also sets the stream's own lifecycle, since a template only
reaches streams created after it. Where the cluster has no data stream lifecycle (such as the
integ-test build tests run against), `enforce_retention` does what the lifecycle would: it
rolls the write index over once it is as old as the lifecycle's automatic rollover age, and
deletes whole backing indices once their newest document is older than the retention. Deleting
whole indices, never single documents, is what keeps it cheap; the price is that a document
lives up to one rollover period past its retention, as with Elasticsearch's own lifecycle.

Removal deletes the deployment's logs and template unless the deployment asked to keep its logs
(`extra["keep_logs"]`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.core.settings import ElasticsearchSettings, Settings
from app.integrations.elasticsearch import BackingIndex, ElasticsearchClient
from app.provisioning.targets import Applied, Artifact, DeploymentView

# DeploymentView.extra key: keep the deployment's logs (and so its template) when it is removed.
KEEP_LOGS = "keep_logs"
DATA_STREAM_PREFIX = "airflow-logs-"
TEMPLATE_DIR = "elasticsearch/index-templates"
# Above Elasticsearch's built-in templates (`logs-*-*` has 100), so none of them can win.
TEMPLATE_PRIORITY = 200

_TEXT_WITH_KEYWORD: Mapping[str, Any] = {
    "type": "text",
    # Exact matches (the end-of-log mark, "same line as") on short lines only; long lines are
    # found through the text field.
    "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
}
_KEYWORD: Mapping[str, Any] = {"type": "keyword"}

# The fields Airflow's Elasticsearch handler and Sextant's FluentD pipeline write
# (reference: airflow.md section 4). Dotted names are flat fields: `subobjects: false` lets a
# document carry both `host` (Airflow's host_field) and `host.name` (ECS shippers), and keeps
# Kubernetes label keys such as `app` and `app.kubernetes.io/name` from colliding.
LOG_MAPPINGS: Mapping[str, Any] = {
    "subobjects": False,
    # A string that happens to look like a date must not fix a field's type for good.
    "date_detection": False,
    "dynamic_templates": [
        {
            "strings_as_keywords": {
                "match_mapping_type": "string",
                "mapping": {"type": "keyword", "ignore_above": 1024},
            }
        }
    ],
    "properties": {
        # Airflow 3 writes microseconds; date_nanos keeps lines of one millisecond in order.
        "@timestamp": {"type": "date_nanos"},
        "timestamp": {"type": "date_nanos", "ignore_malformed": True},
        "log_id": _KEYWORD,
        # Airflow's ordering key: line numbers (Airflow 3 upload) or epoch nanoseconds (stdout).
        "offset": {"type": "long"},
        # Where Filebeat users point `offset_field`.
        "log.offset": {"type": "long"},
        "dag_id": _KEYWORD,
        "task_id": _KEYWORD,
        "run_id": _KEYWORD,
        "map_index": {"type": "integer"},
        "try_number": {"type": "integer"},
        "logical_date": _KEYWORD,
        "level": _KEYWORD,
        "levelname": _KEYWORD,
        # Airflow 3 writes the line as `event`, Airflow 2 as `message`.
        "event": _TEXT_WITH_KEYWORD,
        "message": _TEXT_WITH_KEYWORD,
        "logger": _KEYWORD,
        "chan": _KEYWORD,
        "component": _KEYWORD,
        "host": _KEYWORD,
        "host.name": _KEYWORD,
        "deployment": _KEYWORD,
        "workspace": _KEYWORD,
        # Airflow 3's structured tracebacks: searchable, without one field per frame attribute.
        "error_detail": {"type": "flattened"},
    },
}


def log_data_stream(deployment: str) -> str:
    """The data stream (and index template) holding a deployment's logs."""
    return f"{DATA_STREAM_PREFIX}{deployment}"


def index_template(deployment: str, workspace: str, retention_days: int) -> dict[str, Any]:
    """The composable index template of a deployment's log data stream."""
    return {
        "index_patterns": [log_data_stream(deployment)],
        "data_stream": {},
        "priority": TEMPLATE_PRIORITY,
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": "1",
                    # No replica on a single node (where it could never be assigned and would
                    # keep the cluster yellow), one as soon as there is a second node.
                    "auto_expand_replicas": "0-1",
                }
            },
            "mappings": LOG_MAPPINGS,
            "lifecycle": {"data_retention": retention(retention_days)},
        },
        "_meta": {"managed_by": "sextant", "deployment": deployment, "workspace": workspace},
    }


def retention(days: int) -> str:
    """A retention in Elasticsearch's time unit syntax."""
    return f"{days}d"


def render_template_json(template: Mapping[str, Any]) -> str:
    """A template as the stable JSON text that is rendered, hashed and committed."""
    return json.dumps(template, indent=2, sort_keys=True) + "\n"


# -- retention where the cluster does not enforce it ------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What one retention pass does to a data stream."""

    rollover: bool
    delete: tuple[str, ...]


def rollover_age(keep: timedelta) -> timedelta:
    """How old a write index gets before it is rolled over, for a retention of `keep`.

    The same ages as Elasticsearch's data stream lifecycle (`max_age: auto`), so that the
    fallback produces the layout a production cluster would: about retention / age + 1 backing
    indices per deployment.
    """
    if keep >= timedelta(days=90):
        return timedelta(days=30)
    if keep >= timedelta(days=14):
        return timedelta(days=7)
    if keep >= timedelta(days=1):
        return timedelta(days=1)
    return timedelta(hours=1)


def plan_retention(
    indices: Sequence[BackingIndex], *, now: datetime, keep: timedelta
) -> RetentionPlan:
    """Which backing indices have expired, and whether the write index must roll over first.

    An index has expired when its newest document (its creation, if empty) is older than
    `now - keep`. The write index cannot be deleted, so it rolls over when it has documents
    and is either as old as `rollover_age(keep)` or wholly expired; in the latter case it is
    deleted in the same pass, once it no longer is the write index.
    """
    cutoff = now - keep
    delete: list[str] = []
    rollover = False
    for index in indices:
        expired = (index.newest or index.created_at) < cutoff
        if not index.write:
            if expired:
                delete.append(index.name)
            continue
        if index.documents == 0:
            continue
        if expired:
            rollover = True
            delete.append(index.name)
        elif index.created_at <= now - rollover_age(keep):
            rollover = True
    return RetentionPlan(rollover, tuple(delete))


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What a retention pass did for one deployment."""

    enforced_by_cluster: bool
    rolled_over: bool = False
    deleted: tuple[str, ...] = ()


# -- the target -------------------------------------------------------------------------------


class ElasticsearchTarget:
    """Provision a deployment's log data stream template in Elasticsearch."""

    name = "elasticsearch"
    # Torn down after the runtime: the deployment's processes (and the local log shipper) send
    # lines until they stop, and a late line would re-create a deleted stream.
    removed_last = True

    def __init__(self, settings: ElasticsearchSettings) -> None:
        self._settings = settings
        self._client: ElasticsearchClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchTarget:
        """The target for the running Sextant's settings."""
        return cls(settings.elasticsearch)

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        """The deployment's index template, as the JSON body Elasticsearch is sent."""
        template = index_template(
            deployment.name, deployment.workspace, deployment.log_retention_days
        )
        path = f"{TEMPLATE_DIR}/{log_data_stream(deployment.name)}.json"
        return [Artifact(path, render_template_json(template))]

    def configured(self) -> bool:
        """Whether Elasticsearch's URL is set."""
        return bool(self._settings.url)

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        """Store the template unless unchanged, and the retention of an existing stream."""
        client = self._connected()
        name = log_data_stream(deployment.name)
        writes = 0
        for artifact in artifacts:
            writes += await client.ensure_index_template(name, json.loads(artifact.content))
        wanted = retention(deployment.log_retention_days)
        if (await client.capabilities()).data_stream_lifecycle:
            current = await client.data_stream_retention(name)
            if current is not None and current != wanted:
                writes += await client.put_data_stream_retention(name, wanted)
            enforced = "retention enforced by Elasticsearch"
        else:
            enforced = "retention enforced by Sextant (no data stream lifecycle on this cluster)"
        return Applied(writes, f"template {name}, retention {wanted}; {enforced}")

    async def remove(self, deployment: DeploymentView) -> Applied:
        """Delete the deployment's logs and template, unless it asked to keep its logs."""
        name = log_data_stream(deployment.name)
        if deployment.extra.get(KEEP_LOGS, False):
            return Applied(0, f"logs kept in {name}")
        client = self._connected()
        deletion = await client.delete_data_stream(name)
        writes = deletion.writes
        if deletion.stream_deleted:
            writes += await client.delete_index_template(name)
            return Applied(writes, f"{name}: {deletion.detail}; template deleted")
        # Elasticsearch refuses to delete a template while a stream uses it.
        return Applied(writes, f"{name}: {deletion.detail}; template kept for it")

    async def enforce_retention(self, deployment: DeploymentView, now: datetime) -> RetentionResult:
        """Delete the deployment's expired logs, where the cluster does not do it itself."""
        client = self._connected()
        if (await client.capabilities()).data_stream_lifecycle:
            return RetentionResult(enforced_by_cluster=True)
        name = log_data_stream(deployment.name)
        keep = timedelta(days=deployment.log_retention_days)
        plan = plan_retention(await client.backing_indices(name), now=now, keep=keep)
        if plan.rollover:
            await client.rollover(name)
        await client.delete_backing_indices(plan.delete)
        return RetentionResult(False, plan.rollover, plan.delete)

    async def health(self) -> str:
        """The cluster's health status, for readiness."""
        return await self._connected().health()

    def client(self) -> ElasticsearchClient:
        """The client of this event loop, for the log read path."""
        return self._connected()

    async def aclose(self) -> None:
        """Close the Elasticsearch client, if one was opened."""
        if self._client is not None:
            await self._client.aclose()
            self._client = self._loop = None

    def _connected(self) -> ElasticsearchClient:
        # The client's connections belong to one event loop; tests and the CLI may run several
        # loops one after another in the same process.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            if not self._settings.url:
                raise RuntimeError("Elasticsearch is not configured")  # callers check configured()
            password = self._settings.password
            self._client = ElasticsearchClient(
                self._settings.url,
                username=self._settings.username,
                password=password.get_secret_value() if password is not None else None,
                timeout=self._settings.timeout,
            )
            self._loop = loop
        return self._client
