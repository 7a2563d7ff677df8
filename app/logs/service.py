"""Task and component logs of a deployment, read from its own Elasticsearch data stream.

Access comes first: every read starts by resolving the deployment for the caller, so a caller
who may not see it gets 404 before anything is asked of Elasticsearch, and the data stream is
derived from the deployment's name, never from the request.

Reads follow Airflow's own reader (reference: airflow.md section 4.3) but target one data stream
and page without `from`:

- a task try's log is the documents whose `log_id` is the try's (Airflow's log_id_template),
  in `offset` order; the cursor is the last offset sent (`offset > after`), as a string because
  offsets are 64-bit. The end-of-log mark ends the log and is not shown. Airflow 2 writes the
  line as `message`, Airflow 3 as `event`; both are read.
- component logs (documents without a `log_id`) come newest first, paged with `search_after` on
  (`@timestamp`, backing index, `_seq_no`). Every backing index has one primary shard, so the
  pair identifies a document within the stream without a point in time: a cursor is stateless
  and never expires, and lines arriving meanwhile are newer, so none repeats.
- a live tail polls the same queries once a second for a bounded time. Component lines can reach
  Elasticsearch out of order (each component's shipper buffers for seconds), so the tail re-reads
  a short window behind the newest line it sent and skips what it has already sent.

Elasticsearch's failures become `Unavailable` (503) with what went wrong.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Gauge
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidInput, Unavailable
from app.core.security import Action, Principal
from app.deployments.service import deployments
from app.integrations.errors import IntegrationError, TransientError
from app.logs import repository
from app.logs.airflow_config import END_OF_LOG_MARK
from app.logs.schemas import (
    ComponentLogFilter,
    ComponentLogLine,
    ComponentLogPage,
    LogLevel,
    TaskLogLine,
    TaskLogPage,
    TaskTry,
)
from app.observability.elasticsearch_target import log_data_stream
from app.observability.fluentd import LOG_ID_TEMPLATE
from app.provisioning.service import provisioning
from app.provisioning.targets import DeploymentView

logger = logging.getLogger(__name__)

FOLLOWS_ACTIVE = Gauge("sextant_log_follows_active", "Live log tails being streamed")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TASK_FIELDS = ["event", "message", "level", "levelname", "timestamp", "@timestamp", "logger"]
_TASK_FIELDS += ["host", "host.name"]
_COMPONENT_FIELDS = ["event", "message", "level", "levelname", "logger", "component"]
_COMPONENT_FIELDS += ["host", "host.name"]
_FILTER_PATH = ["hits.hits._source", "hits.hits.sort"]
# Newest first, then the document's identity within the stream: backing index and sequence number.
_NEWEST_FIRST = [
    {"@timestamp": {"order": "desc"}},
    {"_index": {"order": "desc"}},
    {"_seq_no": {"order": "desc"}},
]
_OLDEST_FIRST = [
    {"@timestamp": {"order": "asc"}},
    {"_index": {"order": "asc"}},
    {"_seq_no": {"order": "asc"}},
]
_BY_OFFSET = [{"offset": {"order": "asc", "unmapped_type": "long"}}]
# Python's level names as Airflow 3 (lower case) and Airflow 2 (upper case) write them.
_LEVEL_NAMES: dict[LogLevel, tuple[str, ...]] = {
    LogLevel.DEBUG: ("debug",),
    LogLevel.INFO: ("info",),
    LogLevel.WARNING: ("warning", "warn"),
    LogLevel.ERROR: ("error", "exception"),
    LogLevel.CRITICAL: ("critical", "fatal"),
}


class LogStore(Protocol):
    """What the log reads need of Elasticsearch (`ElasticsearchClient` in production)."""

    async def search(
        self,
        index: str,
        body: Mapping[str, Any],
        *,
        ignore_unavailable: bool = False,
        filter_path: Sequence[str] | None = None,
    ) -> Mapping[str, Any]:
        """Run a search request body against one exact data stream."""
        ...


# -- queries (pure) ----------------------------------------------------------------------------


def task_log_id(task_try: TaskTry) -> str:
    """The try's `log_id`, as Airflow renders it with the deployment's log_id_template."""
    return LOG_ID_TEMPLATE.format(
        dag_id=task_try.dag_id,
        task_id=task_try.task_id,
        run_id=task_try.run_id,
        map_index=task_try.map_index,
        try_number=task_try.try_number,
    )


def task_log_query(log_id: str, after: int | None, size: int) -> dict[str, Any]:
    """The search for a try's lines after an offset, in offset order."""
    filters: list[dict[str, Any]] = [{"term": {"log_id": log_id}}]
    if after is not None:
        filters.append({"range": {"offset": {"gt": after}}})
    return {
        "query": {"bool": {"filter": filters}},
        "sort": _BY_OFFSET,
        "size": size,
        "track_total_hits": False,
        "_source": _TASK_FIELDS,
    }


def component_log_query(
    wanted: ComponentLogFilter,
    *,
    size: int,
    search_after: Sequence[Any] | None = None,
    newest_first: bool = True,
) -> dict[str, Any]:
    """The search for component log lines matching a filter."""
    filters: list[dict[str, Any]] = []
    if wanted.component is not None:
        filters.append({"term": {"component": wanted.component.value}})
    if wanted.level is not None:
        names = levels_at_or_above(wanted.level)
        filters.append(
            {
                "bool": {
                    "should": [{"terms": {"level": names}}, {"terms": {"levelname": names}}],
                    "minimum_should_match": 1,
                }
            }
        )
    if wanted.text:
        phrase = {"query": wanted.text, "type": "phrase", "fields": ["event", "message"]}
        filters.append({"multi_match": phrase})
    window: dict[str, str] = {}
    if wanted.since is not None:
        window["gte"] = _iso(wanted.since)
    if wanted.until is not None:
        window["lt"] = _iso(wanted.until)
    if window:
        filters.append({"range": {"@timestamp": window}})
    body: dict[str, Any] = {
        # Task lines carry a log_id and are read through the task log.
        "query": {"bool": {"filter": filters, "must_not": [{"exists": {"field": "log_id"}}]}},
        "sort": _NEWEST_FIRST if newest_first else _OLDEST_FIRST,
        "size": size,
        "track_total_hits": False,
        "_source": _COMPONENT_FIELDS,
    }
    if search_after is not None:
        body["search_after"] = list(search_after)
    return body


def levels_at_or_above(level: LogLevel) -> list[str]:
    """Every spelling of the level and the levels above it, in both Airflow's cases."""
    order = list(LogLevel)
    names = [n for lv in order[order.index(level) :] for n in _LEVEL_NAMES[lv]]
    return names + [n.upper() for n in names]


def encode_cursor(sort: Sequence[Any]) -> str:
    """An opaque cursor for a component line's sort values (timestamp, index, sequence)."""
    raw = json.dumps(list(sort), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field_name: str = "query.cursor") -> list[Any]:
    """The sort values of a cursor made by `encode_cursor`; 422 for anything else."""
    problem = InvalidInput.for_field(field_name, "not a cursor returned by this API")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise problem from None
    if not (
        isinstance(values, list)
        and len(values) == 3
        and type(values[0]) is int
        and isinstance(values[1], str)
        and type(values[2]) is int
    ):
        raise problem
    return values


def parse_offset(value: str | None, field_name: str = "query.after") -> int | None:
    """An offset cursor as an integer (None for none)."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19 or int(value) >= 2**63:
        raise InvalidInput.for_field(field_name, "an offset is a non-negative 64-bit integer")
    return int(value)


# -- documents to lines (pure) -----------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _host(source: Mapping[str, Any]) -> str | None:
    host = source.get("host")
    if isinstance(host, Mapping):  # ECS shippers nest it: host.name
        return _text(host.get("name"))
    return _text(host if host is not None else source.get("host.name"))


def line_text(source: Mapping[str, Any]) -> str:
    """A document's line: Airflow 3's `event`, else Airflow 2's `message`."""
    text = source.get("event")
    if text is None:
        text = source.get("message")
    return _text(text) or ""


def task_lines(hits: Sequence[Mapping[str, Any]]) -> tuple[list[TaskLogLine], bool]:
    """The lines of a page of task-log hits, and whether the end-of-log mark was among them."""
    lines: list[TaskLogLine] = []
    ended = False
    # Up to 10,000 lines per page: the common shapes (strings, a flat host) take no call.
    for hit in hits:
        source = hit.get("_source", {})
        message = source.get("event")
        if message is None:
            message = source.get("message")
        if type(message) is not str:
            message = _text(message) or ""
        if len(message) < 32 and message.strip() == END_OF_LOG_MARK:
            ended = True
            continue
        host = source.get("host")
        if host is None or type(host) is not str:
            host = _host(source)
        lines.append(
            {
                "offset": str(hit["sort"][0]),
                "timestamp": _text(source.get("timestamp") or source.get("@timestamp")),
                "level": _text(source.get("level") or source.get("levelname")),
                "message": message,
                "logger": _text(source.get("logger")),
                "host": host,
            }
        )
    return lines, ended


def component_line(hit: Mapping[str, Any]) -> ComponentLogLine:
    """A component log line from its hit (the timestamp from the sort value, in nanoseconds)."""
    source = hit.get("_source", {})
    return ComponentLogLine(
        timestamp=from_nanos(hit["sort"][0]),
        component=_text(source.get("component")),
        host=_host(source),
        level=_text(source.get("level") or source.get("levelname")),
        logger=_text(source.get("logger")),
        message=line_text(source),
    )


def from_nanos(value: int) -> datetime:
    """An epoch-nanosecond sort value as a datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=int(value) // 1000)


def to_nanos(value: datetime) -> int:
    """A datetime as epoch nanoseconds."""
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def iso_nanos(value: int) -> str:
    """Epoch nanoseconds as the ISO 8601 text a `date_nanos` range takes, to the nanosecond."""
    seconds, nanos = divmod(value, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def _iso(value: datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- live tails --------------------------------------------------------------------------------


@dataclass
class TailWindow:
    """Which component lines a live tail has sent, so that late arrivals are sent once.

    Each poll reads from `grace` before the newest line sent; lines read again are recognised
    by their identity (backing index, sequence number) and skipped. Identities older than the
    window are forgotten, so memory stays bounded by the lines of one window.
    """

    start_ns: int
    grace_ns: int
    newest_ns: int = 0
    sent: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.newest_ns = max(self.newest_ns, self.start_ns)

    def read_from(self) -> int:
        """The earliest `@timestamp` (ns) the next poll reads."""
        return max(self.start_ns, self.newest_ns - self.grace_ns)

    def admit(self, sort: Sequence[Any]) -> bool:
        """Whether a line (by its sort values) is new; remembers it if so."""
        at, index, seq_no = int(sort[0]), str(sort[1]), int(sort[2])
        if at < self.read_from() or (index, seq_no) in self.sent:
            return False
        self.sent[(index, seq_no)] = at
        self.newest_ns = max(self.newest_ns, at)
        return True

    def forget_old(self) -> None:
        """Drop identities that fell out of the window."""
        horizon = self.read_from()
        self.sent = {key: at for key, at in self.sent.items() if at >= horizon}


@dataclass(frozen=True, slots=True)
class FollowEvent:
    """One event of a live tail: `line`, `unavailable`, or `end` (the last)."""

    event: str
    data: BaseModel | dict[str, Any]
    id: str | None = None


Poll = Callable[[], Awaitable[tuple[list[FollowEvent], bool]]]


class Follow:
    """A live tail, bounded in time: polls, yields new lines, and ends.

    `events()` yields None when nothing was sent for `keepalive` seconds, so the response can
    send a comment that keeps proxies from closing an idle stream. When the client leaves, the
    server cancels the generator; the `finally` releases it.
    """

    def __init__(
        self,
        poll: Poll,
        first: list[FollowEvent],
        ended: bool,
        *,
        max_seconds: float,
        interval: float,
        keepalive: float = 15.0,
    ) -> None:
        self._poll = poll
        self._first = first
        self._ended = ended
        self._deadline = time.monotonic() + max_seconds
        self._interval = interval
        self._keepalive = keepalive

    async def events(self) -> AsyncIterator[FollowEvent | None]:
        """The tail's events until the end of the log, the time limit, or the client leaves."""
        FOLLOWS_ACTIVE.inc()
        try:
            for event in self._first:
                yield event
            if self._ended:
                yield FollowEvent("end", {"reason": "end_of_log"})
                return
            quiet_since = time.monotonic()
            down = False
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    yield FollowEvent("end", {"reason": "time_limit"})
                    return
                await asyncio.sleep(min(self._interval, remaining))
                try:
                    batch, ended = await self._poll()
                except Unavailable as exc:
                    # Tell the client once per outage, and keep polling: the tail resumes
                    # where it was when Elasticsearch is back.
                    if not down:
                        down = True
                        yield FollowEvent("unavailable", {"message": exc.message})
                    continue
                down = False
                for event in batch:
                    yield event
                if batch:
                    quiet_since = time.monotonic()
                if ended:
                    yield FollowEvent("end", {"reason": "end_of_log"})
                    return
                if time.monotonic() - quiet_since >= self._keepalive:
                    quiet_since = time.monotonic()
                    yield None
        finally:
            FOLLOWS_ACTIVE.dec()


# -- the service -------------------------------------------------------------------------------


class LogService:
    async def data_stream(self, session: AsyncSession, principal: Principal, name: str) -> str:
        """The caller's deployment's data stream; 404 for a deployment the caller cannot see."""
        deployment = await deployments.resolve(session, principal, name, Action.DEPLOYMENT_READ)
        return log_data_stream(deployment.name)

    async def task_log(
        self,
        store: LogStore | None,
        stream: str,
        task_try: TaskTry,
        *,
        after: str | None,
        limit: int,
    ) -> TaskLogPage:
        """A try's lines after the cursor, in offset order."""
        log_id = task_log_id(task_try)
        start = parse_offset(after)
        hits = await self._hits(store, stream, task_log_query(log_id, start, limit))
        lines, ended = task_lines(hits)
        last = str(hits[-1]["sort"][0]) if hits else after
        # Built from known-good parts: validating 10,000 lines again would double the cost.
        return TaskLogPage.model_construct(
            log_id=log_id, lines=lines, next_after=last, end_of_log=ended
        )

    async def component_logs(
        self,
        store: LogStore | None,
        stream: str,
        wanted: ComponentLogFilter,
        *,
        cursor: str | None,
        limit: int,
    ) -> ComponentLogPage:
        """One page of component lines, newest first."""
        _check_window(wanted)
        search_after = decode_cursor(cursor) if cursor is not None else None
        # One more than asked tells whether another page exists, without a count.
        body = component_log_query(wanted, size=limit + 1, search_after=search_after)
        hits = await self._hits(store, stream, body)
        page = hits[:limit]
        more = len(hits) > limit
        return ComponentLogPage(
            lines=[component_line(hit) for hit in page],
            next_cursor=encode_cursor(page[-1]["sort"]) if more and page else None,
        )

    async def follow_task(
        self,
        store: LogStore | None,
        stream: str,
        task_try: TaskTry,
        *,
        after: str | None,
        max_seconds: float,
        interval: float,
    ) -> Follow:
        """A live tail of a try's log; the first read happens here, so a failure is a 503."""
        log_id = task_log_id(task_try)
        position = parse_offset(after)

        async def poll() -> tuple[list[FollowEvent], bool]:
            nonlocal position
            hits = await self._hits(store, stream, task_log_query(log_id, position, 1000))
            lines, ended = task_lines(hits)
            if hits:
                position = int(hits[-1]["sort"][0])
            return [FollowEvent("line", dict(line), line["offset"]) for line in lines], ended

        first, ended = await poll()
        return Follow(poll, first, ended, max_seconds=max_seconds, interval=interval)

    async def follow_components(
        self,
        store: LogStore | None,
        stream: str,
        wanted: ComponentLogFilter,
        *,
        since: datetime,
        resume: str | None,
        max_seconds: float,
        interval: float,
        grace: timedelta = timedelta(seconds=30),
        page: int = 500,
    ) -> Follow:
        """A live tail of component lines from `since` (or after the line a cursor names)."""
        window = TailWindow(start_ns=to_nanos(since), grace_ns=int(grace.total_seconds() * 1e9))
        if resume is not None:
            last = decode_cursor(resume, "header.last-event-id")
            window = TailWindow(start_ns=int(last[0]), grace_ns=window.grace_ns)
            window.admit(last)
        # The tail reads forward from the window; the filter's own since/until do not apply.
        live = wanted.model_copy(update={"since": None, "until": None})

        async def poll() -> tuple[list[FollowEvent], bool]:
            events: list[FollowEvent] = []
            start = window.read_from()
            search_after: list[Any] | None = None
            # Enough pages for a burst; what is left waits for the next poll.
            for _ in range(20):
                body = component_log_query(
                    live, size=page, search_after=search_after, newest_first=False
                )
                body["query"]["bool"]["filter"].append(
                    {"range": {"@timestamp": {"gte": iso_nanos(start)}}}
                )
                hits = await self._hits(store, stream, body)
                for hit in hits:
                    if window.admit(hit["sort"]):
                        line = component_line(hit)
                        events.append(FollowEvent("line", line, encode_cursor(hit["sort"])))
                if len(hits) < page:
                    break
                search_after = list(hits[-1]["sort"])
            window.forget_old()
            return events, False

        first, _ = await poll()
        return Follow(poll, first, False, max_seconds=max_seconds, interval=interval)

    async def deployments_to_retain(self, session: AsyncSession) -> list[DeploymentView]:
        """What the retention job needs of every deployment whose logs are kept."""
        return [
            await provisioning.view(session, deployment)
            for deployment in await repository.deployments_with_logs(session)
        ]

    async def _hits(
        self, store: LogStore | None, stream: str, body: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        if store is None:
            raise Unavailable(
                "Elasticsearch is not configured (SEXTANT_ELASTICSEARCH_URL), so there are no "
                "logs to read"
            )
        try:
            # A deployment that never logged has no stream yet: no lines rather than an error.
            response = await store.search(
                stream, body, ignore_unavailable=True, filter_path=_FILTER_PATH
            )
        except IntegrationError as exc:
            logger.warning("log read failed", extra={"data_stream": stream, "error": str(exc)})
            if isinstance(exc, TransientError):
                message = f"Elasticsearch is unavailable, logs cannot be read now: {exc.message}"
            else:
                message = f"Elasticsearch refused the log query: {exc.message}"
            raise Unavailable(message) from exc
        hits: list[Mapping[str, Any]] = response.get("hits", {}).get("hits", [])
        return hits


def _check_window(wanted: ComponentLogFilter) -> None:
    if wanted.since is not None and wanted.until is not None and wanted.until <= wanted.since:
        raise InvalidInput.for_field("query.until", "must be after `since`")


logs = LogService()
