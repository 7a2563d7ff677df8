"""Prometheus: the query API (metric names, series, instant queries) and rule reloads.

This is the only module that talks HTTP to Prometheus. Reads go through prometheus-api-client,
which is synchronous (requests): each call runs in a worker thread (`asyncio.to_thread`), which
costs nothing that matters at Sextant's rate (a lint is a few dozen calls; the evaluator issues
one fleet-wide query per rule and cycle, never one per deployment). Its own retry adapter is
turned off, because retries live in one place, the caller's backoff (provisioning engine,
periodic jobs). The lifecycle endpoint `POST /-/reload` is not part of that client, so it goes
through httpx, Sextant's HTTP client.

Instant queries are the exception to the client's parsing: the scaling round and the alert
evaluator ask one fleet-wide query every cycle, whose answer has thousands of series (270 KB for
1,000 deployments' load). They go through the same requests session that the client uses, and
the answer is read with orjson into `Sample` tuples: the client side of that query went from
about 9.5 ms to 6.3 ms over a bare HTTP read (the client's `json`, a dataclass per series).

Failures become TransientError (connection, timeout, 5xx, 429) or PermanentError (4xx, e.g. a
query Prometheus refuses), with Prometheus' own error text when it sent one, never a whole body.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import httpx
import orjson
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from app.integrations.errors import IntegrationError, TransientError, for_status

UPSTREAM = "prometheus"
T = TypeVar("T")
_STATUS = re.compile(r"HTTP Status Code (\d+)")
_BODY = re.compile(r"\((b(['\"]).*\2)\)$", re.DOTALL)
_NO_VALUE = (0, "NaN")


class Sample(NamedTuple):
    """One series of an instant query result: its labels and value (a tuple: a fleet's answer
    makes thousands of them per query)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class RangePoint:
    timestamp: float
    value: float


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series of a range query result."""

    labels: Mapping[str, str]
    points: tuple[RangePoint, ...]


class PrometheusClient:
    """A narrow client of one Prometheus server."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # Sextant's own session, shared with the client: instant queries use it directly.
        self._session = requests.Session()
        self._connection = PrometheusConnect(
            url=self.url,
            session=self._session,
            retry=Retry(total=0, raise_on_status=False),
            timeout=timeout,
            # Uncompressed: Sextant reads Prometheus over a cluster's or a host's network, where
            # gzipping a fleet-wide answer (270 KB for 1,000 deployments' load) costs Prometheus
            # and Sextant more CPU time than the bytes take to travel (2.7 ms of a 40 ms query
            # on loopback, bench/scaling_eval).
            headers={"Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._connection.close()

    async def metric_names(self, window: timedelta | None = None) -> set[str]:
        """Names of the metrics with samples in the last `window` (all stored data if None)."""
        params = _window_params(window)
        values = await self._call(lambda: self._connection.get_label_values("__name__", params))
        return {str(v) for v in values}

    async def series(self, selector: str, window: timedelta | None = None) -> list[dict[str, str]]:
        """Label sets of the series matching `selector` in the last `window` (all data if None)."""
        end = datetime.now(UTC)
        start = datetime.fromtimestamp(0, UTC) if window is None else end - window
        found = await self._call(
            lambda: self._connection.get_series(start, end, params={"match[]": selector})
        )
        return [{str(k): str(v) for k, v in labels.items()} for labels in found]

    async def query(self, expr: str) -> list[Sample]:
        """Evaluate an instant query now; vector results only (scalars become one sample)."""
        return await self._call(lambda: self._instant(expr))

    def _instant(self, expr: str) -> list[Sample]:
        connection = self._connection
        response = self._session.get(
            f"{self.url}/api/v1/query",
            params={"query": expr},
            headers=connection.headers,
            timeout=self.timeout,
        )
        if response.status_code != 200:
            raise for_status(UPSTREAM, response.status_code, _answer_error(response.content))
        with _collector_paused():
            return _samples(response.content)

    async def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[RangeSeries]:
        """Evaluate `expr` over [start, end] (Unix seconds) every `step` seconds."""
        raw = await self._call(
            lambda: self._connection.custom_query_range(
                expr,
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC),
                step=str(step),
            )
        )
        return [
            RangeSeries(
                {str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                tuple(RangePoint(float(t), float(v)) for t, v in item.get("values") or ()),
            )
            for item in raw
        ]

    async def reload(self) -> None:
        """Ask Prometheus to re-read its configuration and rule files (`POST /-/reload`)."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(f"{self.url}/-/reload")
        except httpx.HTTPError as exc:
            raise TransientError(UPSTREAM, f"reload: {type(exc).__name__}") from exc
        if not response.is_success:
            # Prometheus explains a failed reload (e.g. an invalid rule file) in the body.
            raise for_status(UPSTREAM, response.status_code, f"reload: {response.text}")

    async def _call(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except PrometheusApiClientException as exc:
            raise _api_error(exc) from exc
        except requests.RequestException as exc:
            raise TransientError(UPSTREAM, f"{type(exc).__name__} contacting Prometheus") from exc
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise TransientError(UPSTREAM, f"unreadable answer: {type(exc).__name__}") from exc


def _samples(body: bytes) -> list[Sample]:
    """The samples of an instant query's JSON answer."""
    answer = orjson.loads(body)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise TransientError(UPSTREAM, "unreadable answer: no data")
    result = data.get("result") or []
    if data.get("resultType") == "scalar":
        result = [{"metric": {}, "value": result}]
    # Each sample built in place (a fleet's answer has thousands): Prometheus' label names and
    # values are JSON strings already, so the mapping is used as it came; a series without a
    # value counts as NaN.
    new = tuple.__new__
    return [
        new(Sample, (item.get("metric") or {}, float((item.get("value") or _NO_VALUE)[1])))
        for item in result
    ]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while an answer is read into samples.

    A fleet's answer makes some 12,000 containers (a dict and a list per series, its labels,
    the samples), none in a reference cycle, all alive until the answer is read: each of the
    collector's passes that their allocation sets off walks them for nothing, and the older
    generations' passes promote them towards the next full pass. They are freed by reference
    counting, as before. For 1,000 deployments' load this halves the collector's passes over
    the scaling rounds (full passes included) and cuts its time by a third, not moved
    elsewhere. Left as it is when something else turned the collector off; if two threads
    read answers at once, the first to finish turns it back on.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _window_params(window: timedelta | None) -> dict[str, Any]:
    if window is None:
        return {}
    end = datetime.now(UTC)
    return {"start": (end - window).timestamp(), "end": end.timestamp()}


def _api_error(exc: PrometheusApiClientException) -> IntegrationError:
    # The client's message is "HTTP Status Code <n> (<repr of the body bytes>)": keep the status
    # and the "error" field of Prometheus' JSON answer, never the body itself.
    text = str(exc)
    status_match = _STATUS.search(text)
    status = int(status_match.group(1)) if status_match else 502
    return for_status(UPSTREAM, status, _error_text(text))


def _error_text(text: str) -> str:
    body_match = _BODY.search(text)
    if body_match is None:
        return "no error text"
    try:
        body = ast.literal_eval(body_match.group(1))
    except (ValueError, SyntaxError):
        return "unreadable error"
    return _answer_error(body)


def _answer_error(body: bytes | str) -> str:
    """The "error" field of Prometheus' JSON answer, never the body itself."""
    try:
        answer = json.loads(body)
    except ValueError:
        return "unreadable error"
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) else "no error text"
