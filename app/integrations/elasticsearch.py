"""Elasticsearch through elasticsearch-py's async client: index templates, data streams and
their backing indices, log documents, and cluster health.

Sextant keeps each deployment's logs in its own data stream, created by a composable index
template. This module offers the few operations that needs, each on an exact name: names with
wildcards or commas are refused before any request, so that acting on `airflow-logs-etl` can
never touch `airflow-logs-etl-prod`.

Not every cluster has the data stream APIs. The `integ-test-zip` build we can run here (8.19)
lacks the data-streams module: templates with `data_stream` and `lifecycle` are accepted and
indexing creates the stream, but `/_data_stream/...` (get, delete, lifecycle) has no handler, so
nothing enforces `data_retention` and a stream cannot be deleted. `capabilities()` asks the
cluster (`GET /_capabilities`, ES >= 8.14) instead of guessing from a version, and the callers
choose: on a full cluster the stream is deleted and retention is Elasticsearch's job; otherwise
backing indices are rolled over and deleted by name, which every build supports.

Readiness uses `GET /_cluster/health`: `GET /` is not served by every build. Failures become
`TransientError` (connection errors, timeouts, 429, 5xx) or `PermanentError` (other 4xx, a
server that is not Elasticsearch) with the library's exception as `__cause__`; messages carry
Elasticsearch's error type and reason and the server's address without credentials, never a
whole body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import elasticsearch
from elasticsearch import AsyncElasticsearch

from app.integrations.errors import (
    IntegrationError,
    PermanentError,
    TransientError,
    for_status,
    truncate,
)

logger = logging.getLogger(__name__)

UPSTREAM = "elasticsearch"
# An exact index, data stream or template name: what Elasticsearch allows, minus every
# character that widens a request (`*`, `?`, `,`) and the leading `-`/`_`/`+` it refuses.
_EXACT_NAME = re.compile(r"^[a-z0-9.][a-z0-9._-]{0,254}$")
# Backing indices are hidden and start with `.ds-`; only those may be deleted by name here.
_BACKING_PREFIX = ".ds-"
# Template keys whose server-side defaults are filled in before comparing.
_DATA_STREAM_DEFAULTS: Mapping[str, Any] = {"hidden": False, "allow_custom_routing": False}
_LIFECYCLE_DEFAULTS: Mapping[str, Any] = {"enabled": True}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this cluster can do with data streams."""

    # GET/DELETE /_data_stream/{name}: a data stream can be listed and deleted as a whole.
    data_stream_api: bool
    # /_data_stream/{name}/_lifecycle: the cluster enforces a stream's `data_retention`.
    data_stream_lifecycle: bool


@dataclass(frozen=True, slots=True)
class BackingIndex:
    """One backing index of a data stream, with what retention decisions need."""

    name: str
    created_at: datetime
    documents: int
    # The newest `@timestamp` in it; None when it holds no document.
    newest: datetime | None
    # The index new documents go to; Elasticsearch refuses to delete it.
    write: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """A document of a bulk request that Elasticsearch will not take as it is."""

    position: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamDeletion:
    """What deleting a data stream's documents did."""

    writes: int
    # False when the cluster cannot delete a stream: an empty write index remains.
    stream_deleted: bool
    detail: str


class ElasticsearchClient:
    """The calls Sextant makes to one Elasticsearch cluster, with mapped errors."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        # Credentials in the URL are taken out of it: they go to basic auth, never into a message.
        if parts.username and username is None:
            username, password = unquote(parts.username), unquote(parts.password or "")
        host = parts.hostname or "localhost"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self.base_url = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self._timeout = timeout
        self._capabilities: Capabilities | None = None
        self._client = AsyncElasticsearch(
            self.base_url,
            basic_auth=(username, password or "") if username else None,
            request_timeout=timeout,
            # Retries with backoff belong to the provisioning engine; one quick retry here only
            # covers a connection dropped by a proxy.
            max_retries=1,
            retry_on_timeout=False,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    # -- requests -------------------------------------------------------------------------

    async def _call(self, what: str, request: Awaitable[T]) -> T:
        try:
            return await request
        except elasticsearch.UnsupportedProductError as exc:
            raise PermanentError(
                UPSTREAM, f"{what}: {self.base_url} does not answer as Elasticsearch"
            ) from exc
        except elasticsearch.ApiError as exc:
            raise self._api_error(what, exc) from exc
        except elasticsearch.ConnectionTimeout as exc:
            raise TransientError(
                UPSTREAM, f"{what}: no answer from {self.base_url} within {self._timeout:g} s"
            ) from exc
        except elasticsearch.ConnectionError as exc:
            raise TransientError(
                UPSTREAM, f"{what}: cannot connect to {self.base_url} (is Elasticsearch running?)"
            ) from exc
        except elasticsearch.TransportError as exc:
            raise TransientError(
                UPSTREAM, f"{what}: {type(exc).__name__} talking to {self.base_url}"
            ) from exc
        except elasticsearch.SerializationError as exc:
            raise PermanentError(UPSTREAM, f"{what}: unreadable answer ({exc})") from exc

    def _api_error(self, what: str, exc: elasticsearch.ApiError) -> IntegrationError:
        return for_status(UPSTREAM, exc.meta.status, f"{what}: {error_reason(exc.body)}")

    async def _get_or_none(self, what: str, request: Awaitable[T]) -> T | None:
        try:
            return await self._call(what, request)
        except PermanentError as exc:
            if _status_of(exc) == 404:
                return None
            raise

    # -- cluster --------------------------------------------------------------------------

    async def health(self) -> str:
        """The cluster's health status (green, yellow or red)."""
        response = await self._call("cluster health", self._client.cluster.health())
        return str(response.body["status"])

    async def capabilities(self) -> Capabilities:
        """What the cluster supports for data streams; asked once per client."""
        if self._capabilities is None:
            stream_api = await self._supports("DELETE", "/_data_stream/{name}")
            lifecycle = await self._supports("GET", "/_data_stream/{name}/_lifecycle")
            self._capabilities = Capabilities(stream_api, lifecycle)
        return self._capabilities

    async def _supports(self, method: str, path: str) -> bool:
        request = self._client.perform_request(
            "GET", "/_capabilities", params={"method": method, "path": path}
        )
        try:
            response = await self._call(f"capabilities of {method} {path}", request)
        except PermanentError:
            # Before 8.14 there is no capabilities API; every distribution of those versions
            # ships the data-streams module.
            return True
        # `supported` is null when the nodes disagree or cannot tell: take the path every
        # cluster supports.
        return response.body.get("supported") is True

    # -- index templates ------------------------------------------------------------------

    async def index_template(self, name: str) -> Mapping[str, Any] | None:
        """The stored composable template `name`, or None."""
        _check_name(name)
        response = await self._get_or_none(
            f"reading index template {name}", self._client.indices.get_index_template(name=name)
        )
        if response is None:
            return None
        for entry in response.body.get("index_templates", []):
            if entry.get("name") == name:
                template: Mapping[str, Any] = entry["index_template"]
                return template
        return None

    async def ensure_index_template(self, name: str, body: Mapping[str, Any]) -> int:
        """Store template `name` unless the stored one is the same; writes issued (0 or 1)."""
        current = await self.index_template(name)
        if current is not None and template_matches(current, body):
            return 0
        await self._call(
            f"writing index template {name}",
            self._client.indices.put_index_template(name=name, body=dict(body)),
        )
        logger.info("index template written", extra={"template": name})
        return 1

    async def delete_index_template(self, name: str) -> int:
        """Delete template `name`; writes issued (0 when it did not exist)."""
        _check_name(name)
        deleted = await self._get_or_none(
            f"deleting index template {name}",
            self._client.indices.delete_index_template(name=name),
        )
        return 0 if deleted is None else 1

    # -- data streams ---------------------------------------------------------------------

    async def backing_indices(self, data_stream: str) -> list[BackingIndex]:
        """The backing indices of `data_stream`, oldest first ([] when it does not exist)."""
        _check_name(data_stream)
        resolved = await self._get_or_none(
            f"resolving {data_stream}", self._client.indices.resolve_index(name=data_stream)
        )
        names: list[str] = []
        for stream in [] if resolved is None else resolved.body.get("data_streams", []):
            if stream.get("name") == data_stream:
                names = list(stream.get("backing_indices", []))
        if not names:
            return []
        target = ",".join(names)
        settings = await self._call(
            f"reading settings of {data_stream}",
            self._client.indices.get_settings(
                index=target, name="index.creation_date", flat_settings=True
            ),
        )
        newest = await self._call(
            f"measuring {data_stream}",
            self._client.search(
                index=target,
                size=0,
                aggregations={
                    "by_index": {
                        "terms": {"field": "_index", "size": len(names)},
                        "aggs": {"newest": {"max": {"field": "@timestamp"}}},
                    }
                },
            ),
        )
        buckets = {
            bucket["key"]: bucket
            for bucket in newest.body.get("aggregations", {}).get("by_index", {}).get("buckets", [])
        }
        indices = []
        # Elasticsearch lists a stream's backing indices by generation; the last one is written.
        for position, name in enumerate(names):
            created_ms = int(settings.body[name]["settings"]["index.creation_date"])
            bucket = buckets.get(name, {})
            newest_ms = bucket.get("newest", {}).get("value")
            indices.append(
                BackingIndex(
                    name=name,
                    created_at=_from_epoch_ms(created_ms),
                    documents=int(bucket.get("doc_count", 0)),
                    newest=None if newest_ms is None else _from_epoch_ms(newest_ms),
                    write=position == len(names) - 1,
                )
            )
        return indices

    async def rollover(self, data_stream: str) -> str:
        """Start a new write index for `data_stream`; returns its name."""
        _check_name(data_stream)
        response = await self._call(
            f"rolling over {data_stream}", self._client.indices.rollover(alias=data_stream)
        )
        return str(response.body["new_index"])

    async def delete_backing_indices(self, names: Sequence[str]) -> int:
        """Delete these backing indices by exact name; writes issued."""
        if not names:
            return 0
        for name in names:
            _check_name(name)
            if not name.startswith(_BACKING_PREFIX):
                raise ValueError(f"{name!r} is not a backing index")
        await self._call(
            f"deleting {', '.join(names)}",
            self._client.indices.delete(index=",".join(names), expand_wildcards="none"),
        )
        return 1

    async def delete_data_stream(self, data_stream: str) -> StreamDeletion:
        """Delete every document of `data_stream`, and the stream itself where the cluster can."""
        _check_name(data_stream)
        if (await self.capabilities()).data_stream_api:
            deleted = await self._get_or_none(
                f"deleting data stream {data_stream}",
                self._client.indices.delete_data_stream(name=data_stream, expand_wildcards="none"),
            )
            writes = 0 if deleted is None else 1
            return StreamDeletion(writes, True, "data stream deleted" if writes else "no data")
        # The stream's write index cannot be deleted: roll over to an empty one first, then
        # delete every older generation by name.
        indices = await self.backing_indices(data_stream)
        if not indices:
            return StreamDeletion(0, True, "no data")
        writes = 0
        if indices[-1].documents > 0:
            await self.rollover(data_stream)
            writes += 1
            indices = await self.backing_indices(data_stream)
        writes += await self.delete_backing_indices([i.name for i in indices if not i.write])
        return StreamDeletion(
            writes,
            False,
            "documents deleted; this cluster cannot delete data streams, "
            "so the stream stays with one empty write index",
        )

    async def data_stream_retention(self, data_stream: str) -> str | None:
        """The `data_retention` the cluster enforces on `data_stream` ("" when none), or None
        when the stream does not exist."""
        _check_name(data_stream)
        response = await self._get_or_none(
            f"reading the lifecycle of {data_stream}",
            self._client.indices.get_data_lifecycle(name=data_stream, expand_wildcards="none"),
        )
        if response is None:
            return None
        for stream in response.body.get("data_streams", []):
            if stream.get("name") == data_stream:
                return str((stream.get("lifecycle") or {}).get("data_retention") or "")
        return None

    async def put_data_stream_retention(self, data_stream: str, retention: str) -> int:
        """Set an existing stream's `data_retention` (templates only reach new streams)."""
        _check_name(data_stream)
        await self._call(
            f"setting the retention of {data_stream}",
            self._client.indices.put_data_lifecycle(
                name=data_stream, data_retention=retention, expand_wildcards="none"
            ),
        )
        return 1

    # -- documents ------------------------------------------------------------------------

    async def index_documents(
        self,
        data_stream: str,
        documents: Iterable[Mapping[str, Any]],
        *,
        refresh: bool = False,
        ids: Sequence[str] | None = None,
    ) -> int:
        """Append documents to `data_stream` (bulk `create`, as data streams require); any
        document refused fails the call (see `create_documents`)."""
        batch = list(documents)
        refused = await self.create_documents(data_stream, batch, refresh=refresh, ids=ids)
        if refused:
            first = refused[0]
            raise for_status(
                UPSTREAM,
                first.status,
                f"indexing into {data_stream}: {len(refused)} of {len(batch)} documents "
                f"refused, first: {first.reason}",
            )
        return len(batch)

    async def create_documents(
        self,
        data_stream: str,
        documents: Sequence[Mapping[str, Any]],
        *,
        refresh: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Refused]:
        """Append documents to `data_stream` (bulk `create`); returns those Elasticsearch
        refused for what they hold (400: a value that does not fit the field's type, say), and
        raises when the batch could not be taken as a whole (no answer; an item answered 404
        because no template makes the stream, 403, 429 or 5xx), so the caller sends it again.

        The target must be a data stream (or one its index template creates): a missing
        template fails the request instead of creating a plain index of that name. With `ids`,
        each document gets that `_id`, and one already there (409) counts as written, so a
        batch sent twice (a retry after a lost answer) is not stored twice.
        """
        _check_name(data_stream)
        operations: list[Mapping[str, Any]] = []
        for n, document in enumerate(documents):
            action: dict[str, Any] = {"_index": data_stream}
            if ids is not None:
                action["_id"] = ids[n]
            operations += [{"create": action}, document]
        if not operations:
            return []
        response = await self._call(
            f"indexing into {data_stream}",
            self._client.bulk(operations=operations, refresh=refresh, require_data_stream=True),
        )
        if not response.body.get("errors"):
            return []
        refused: list[Refused] = []
        for n, item in enumerate(response.body.get("items", [])):
            result = item.get("create", {})
            status = int(result.get("status", 200))
            if "error" not in result or (ids is not None and status == 409):
                continue
            reason = error_reason({"error": result["error"]})
            if status != 400:  # not the document: no stream (404), no right (403), busy (429)
                raise for_status(UPSTREAM, status, f"indexing into {data_stream}: {reason}")
            refused.append(Refused(n, status, reason))
        return refused

    async def refresh(self, index: str) -> None:
        """Make everything indexed so far searchable."""
        _check_name(index)
        await self._call(f"refreshing {index}", self._client.indices.refresh(index=index))

    async def search(
        self,
        index: str,
        body: Mapping[str, Any],
        *,
        ignore_unavailable: bool = False,
        filter_path: Sequence[str] | None = None,
    ) -> Mapping[str, Any]:
        """Run a search request body against one exact index or data stream.

        `ignore_unavailable` answers no hits, instead of an error, for a stream that does not
        exist yet (a deployment that has not logged). `filter_path` keeps only those parts of
        the answer: a page of log lines is mostly `_source`, and the rest is bytes to parse.
        """
        _check_name(index)
        response = await self._call(
            f"searching {index}",
            self._client.search(
                index=index,
                body=dict(body),
                ignore_unavailable=ignore_unavailable or None,
                filter_path=list(filter_path) if filter_path is not None else None,
            ),
        )
        result: Mapping[str, Any] = response.body
        return result

    async def count(self, index: str, query: Mapping[str, Any] | None = None) -> int:
        """How many documents of one exact index or data stream match `query` (all: None)."""
        _check_name(index)
        response = await self._get_or_none(
            f"counting {index}",
            self._client.count(index=index, query=dict(query) if query is not None else None),
        )
        return 0 if response is None else int(response.body["count"])


def template_matches(stored: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a stored composable template says what `desired` says.

    Elasticsearch hands a template back in its own shape: settings nested and stringified,
    defaults filled in (`data_stream.hidden`, `lifecycle.enabled`, `composed_of: []`), and
    newer versions add keys of their own (creation dates). Both sides are brought to one shape
    covering every key Sextant sets, so an unchanged template compares equal and any change to
    what Sextant manages (including an edit made by hand) does not.
    """
    return _comparable(stored) == _comparable(desired)


def _comparable(template: Mapping[str, Any]) -> dict[str, Any]:
    inner = template.get("template") or {}
    data_stream = template.get("data_stream")
    lifecycle = inner.get("lifecycle")
    return {
        "index_patterns": sorted(_as_list(template.get("index_patterns"))),
        "composed_of": list(template.get("composed_of") or []),
        "priority": template.get("priority"),
        "version": template.get("version"),
        "_meta": template.get("_meta"),
        "data_stream": None if data_stream is None else {**_DATA_STREAM_DEFAULTS, **data_stream},
        "settings": _flat_settings(inner.get("settings") or {}),
        "mappings": inner.get("mappings") or {},
        "aliases": inner.get("aliases") or {},
        "lifecycle": None if lifecycle is None else {**_LIFECYCLE_DEFAULTS, **lifecycle},
    }


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Settings as Elasticsearch stores them: dotted `index.*` keys, string values."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_settings(value, f"{path}."))
            continue
        if not path.startswith("index."):
            path = f"index.{path}"
        if isinstance(value, bool):
            flat[path] = "true" if value else "false"
        elif isinstance(value, list):
            flat[path] = ",".join(str(v) for v in value)
        else:
            flat[path] = str(value)
    return flat


def error_reason(body: Any) -> str:
    """Elasticsearch's error type and reason from a response body, without the rest of it."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            kind = error.get("type", "error")
            reason = error.get("reason") or ""
            caused = error.get("caused_by")
            if isinstance(caused, Mapping) and caused.get("reason"):
                reason = f"{reason} ({caused['reason']})" if reason else str(caused["reason"])
            return truncate(f"{kind}: {reason}")
        if isinstance(error, str):
            return truncate(error)
    return truncate(str(body)) if body else "no details"


def _check_name(name: str) -> None:
    if not _EXACT_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not an exact Elasticsearch name")


def _status_of(exc: IntegrationError) -> int | None:
    cause = exc.__cause__
    if isinstance(cause, elasticsearch.ApiError):
        return int(cause.meta.status)
    return None


def _from_epoch_ms(value: float) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)
