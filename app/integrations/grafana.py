"""Grafana through grafana-client: folders, the Prometheus data source, dashboards.

The interface is narrow on purpose: "make this folder / data source / dashboard exist with this
content" and "remove these". Each `ensure`/`upsert` reads first and writes only when the content
differs, and returns how many writes it issued, so an unchanged workspace costs Grafana reads and
no writes. Dashboards are saved with `overwrite: false` and the version that was read: a 412
`version-mismatch` means someone saved in between, so we re-read and re-apply on top of the new
version. `overwrite: true` is never sent: it would silently replace a concurrent edit, and Grafana
would also let it take over another dashboard that happens to carry the same title in the folder.

Every request passes through one semaphore (settings.grafana.concurrency), however many
dashboards are being applied at once. Failures become `TransientError` (timeouts, connection
errors, 5xx, 408/409/429) or `PermanentError` (other 4xx) with grafana-client's exception as
`__cause__`; messages carry Grafana's own short `message`, never the token or a whole body.

grafana-client's `AsyncGrafanaApi` (on niquests) is used as is: it is a thin async layer over the
documented HTTP API, which is all we need. Its element methods are untyped, hence `Any` here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import niquests.exceptions
from grafana_client.api import AsyncGrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError

from app.integrations.errors import (
    IntegrationError,
    PermanentError,
    TransientError,
    for_status,
)

logger = logging.getLogger(__name__)

UPSTREAM = "grafana"
# How many times a dashboard is re-read and re-applied after a 412 before giving up (for now).
MAX_CONFLICT_RETRIES = 3

T = TypeVar("T")


class GrafanaClient:
    """The calls Sextant makes to one Grafana, with bounded concurrency and mapped errors."""

    def __init__(self, url: str, token: str, *, timeout: float, concurrency: int) -> None:
        parts = urlsplit(url)
        # Credentials in the URL are dropped: the token is the only credential we send.
        host = parts.hostname or "localhost"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self.base_url = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self._timeout = timeout
        self._token = token
        self._semaphore = asyncio.Semaphore(concurrency)
        # grafana-client builds "<scheme>://<host>[:port]/<prefix>api", so a prefix needs its "/".
        prefix = parts.path.strip("/")
        self._api: Any = AsyncGrafanaApi(
            auth=token,
            host=host,
            port=parts.port,
            url_path_prefix=f"{prefix}/" if prefix else "",
            protocol=parts.scheme or "http",
            timeout=timeout,
        )

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._api.client.s.close()

    # -- requests -------------------------------------------------------------------------

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        async with self._semaphore:
            try:
                return await request()
            except GrafanaTimeoutError as exc:
                raise TransientError(
                    UPSTREAM, f"{what}: no answer within {self._timeout:g}s"
                ) from exc
            except GrafanaException as exc:
                raise self._mapped(what, exc) from exc
            except niquests.exceptions.RequestException as exc:
                raise TransientError(
                    UPSTREAM, f"{what}: cannot reach {self.base_url} ({type(exc).__name__})"
                ) from exc

    def _mapped(self, what: str, exc: GrafanaException) -> IntegrationError:
        if not exc.status_code:
            # grafana-client wraps transport failures without a status.
            return TransientError(UPSTREAM, f"{what}: cannot reach {self.base_url}")
        return for_status(UPSTREAM, exc.status_code, f"{what}: {self._message(exc)}")

    def _message(self, exc: GrafanaException) -> str:
        response = exc.response
        if isinstance(response, dict) and isinstance(response.get("message"), str):
            text: str = response["message"]
        else:
            text = "no message"
        return text.replace(self._token, "***") if self._token else text

    async def _get_or_none(self, what: str, request: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await self._call(what, request)
        except PermanentError as exc:
            if _status_of(exc) == 404:
                return None
            raise

    # -- health ---------------------------------------------------------------------------

    async def health(self) -> Mapping[str, Any]:
        """Grafana's `/api/health` answer (version, database state)."""
        answer: Mapping[str, Any] = await self._call(
            "health", lambda: self._api.client.GET("/health")
        )
        return answer

    # -- folders --------------------------------------------------------------------------

    async def ensure_folder(self, uid: str, title: str) -> int:
        """Create the folder unless it exists (its title is left as users set it); writes issued."""
        current = await self._get_or_none(
            f"reading folder {uid}", lambda: self._api.folder.get_folder(uid)
        )
        if current is not None:
            return 0
        try:
            await self._call(
                f"creating folder {uid}",
                lambda: self._api.folder.create_folder(title, uid=uid),
            )
        except TransientError as exc:
            if _status_of(exc) != 409:
                raise
            # Created concurrently (another replica), or a folder with that title exists.
            again = await self._get_or_none(
                f"reading folder {uid}", lambda: self._api.folder.get_folder(uid)
            )
            if again is None:
                raise PermanentError(
                    UPSTREAM, f"creating folder {uid}: a folder titled {title!r} already exists"
                ) from exc
            return 0
        return 1

    async def delete_folder_if_empty(self, uid: str) -> int:
        """Delete the folder unless something (a user's dashboard) is still in it; writes issued."""
        found = await self._call(
            f"searching folder {uid}",
            lambda: self._api.search.search_dashboards(folder_uids=[uid]),
        )
        if found:
            return 0
        deleted = await self._get_or_none(
            f"deleting folder {uid}", lambda: self._api.folder.delete_folder(uid)
        )
        return 0 if deleted is None else 1

    # -- data sources ---------------------------------------------------------------------

    async def ensure_datasource(self, datasource: Mapping[str, Any]) -> int:
        """Create or update the data source (by its `uid`) when it differs; writes issued."""
        uid = str(datasource["uid"])
        current = await self._get_or_none(
            f"reading data source {uid}",
            lambda: self._api.datasource.get_datasource_by_uid(uid),
        )
        if current is not None:
            if _contains(current, datasource):
                return 0
            await self._call(
                f"updating data source {uid}",
                lambda: self._api.datasource.update_datasource_by_uid(uid, dict(datasource)),
            )
            return 1
        try:
            await self._call(
                f"creating data source {uid}",
                lambda: self._api.datasource.create_datasource(dict(datasource)),
            )
        except TransientError as exc:
            if _status_of(exc) != 409:
                raise
            again = await self._get_or_none(
                f"reading data source {uid}",
                lambda: self._api.datasource.get_datasource_by_uid(uid),
            )
            if again is None:
                name = datasource.get("name")
                raise PermanentError(
                    UPSTREAM, f"creating data source {uid}: one named {name!r} already exists"
                ) from exc
            return await self.ensure_datasource(datasource)
        return 1

    # -- dashboards -----------------------------------------------------------------------

    async def read_dashboard(self, uid: str) -> Mapping[str, Any] | None:
        """The dashboard and its meta as Grafana returns them, or None."""
        found: Mapping[str, Any] | None = await self._get_or_none(
            f"reading dashboard {uid}", lambda: self._api.dashboard.get_dashboard(uid)
        )
        return found

    async def upsert_dashboard(
        self, dashboard: Mapping[str, Any], folder_uid: str, *, message: str = ""
    ) -> int:
        """Save the dashboard in the folder unless Grafana already has this content; writes."""
        uid = str(dashboard["uid"])
        for _ in range(MAX_CONFLICT_RETRIES + 1):
            current = await self.read_dashboard(uid)
            if current is not None and _is_current(dashboard, folder_uid, current):
                return 0
            version = (current or {}).get("dashboard", {}).get("version")
            body = {
                "dashboard": {**dashboard, "id": None, "version": version},
                "folderUid": folder_uid,
                "overwrite": False,
                "message": message,
            }
            try:
                await self._call(
                    f"saving dashboard {uid}",
                    functools.partial(self._api.dashboard.update_dashboard, body),
                )
            except PermanentError as exc:
                if _status_of(exc) != 412:
                    raise
                reason = _precondition(exc)
                if reason == "version-mismatch" or (reason == "name-exists" and current is None):
                    logger.info(
                        "grafana dashboard changed concurrently; re-reading",
                        extra={"dashboard": uid, "reason": reason},
                    )
                    continue
                raise
            return 1
        raise TransientError(
            UPSTREAM,
            f"saving dashboard {uid}: it changed under us {MAX_CONFLICT_RETRIES + 1} times",
        )

    async def upsert_dashboards(
        self, dashboards: Iterable[Mapping[str, Any]], folder_uid: str, *, message: str = ""
    ) -> int:
        """Upsert several dashboards concurrently (within the request bound); total writes.

        Every dashboard is attempted even when one fails; the first failure is then raised,
        a permanent one before a transient one.
        """
        results = await asyncio.gather(
            *(self.upsert_dashboard(d, folder_uid, message=message) for d in dashboards),
            return_exceptions=True,
        )
        return _total(results)

    async def delete_dashboard(self, uid: str) -> int:
        """Delete the dashboard if it exists; writes issued."""
        deleted = await self._get_or_none(
            f"deleting dashboard {uid}", lambda: self._api.dashboard.delete_dashboard(uid)
        )
        return 0 if deleted is None else 1

    async def delete_dashboards(self, uids: Iterable[str]) -> int:
        """Delete several dashboards concurrently (within the request bound); total writes."""
        results = await asyncio.gather(
            *(self.delete_dashboard(uid) for uid in uids), return_exceptions=True
        )
        return _total(results)


def _total(results: Iterable[int | BaseException]) -> int:
    writes, failures = 0, []
    for result in results:
        if isinstance(result, int):
            writes += result
        elif isinstance(result, IntegrationError):
            failures.append(result)
        else:
            raise result
    if failures:
        failures.sort(key=lambda f: not isinstance(f, PermanentError))
        raise failures[0]
    return writes


def _status_of(exc: IntegrationError) -> int | None:
    cause = exc.__cause__
    return cause.status_code if isinstance(cause, GrafanaException) else None


def _precondition(exc: IntegrationError) -> str | None:
    cause = exc.__cause__
    if isinstance(cause, GrafanaClientError) and isinstance(cause.response, dict):
        status = cause.response.get("status")
        return status if isinstance(status, str) else None
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _contains(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    # Grafana adds fields of its own (id, version, orgId, typeLogoUrl...); only ours must match.
    return all(_canonical(current.get(key)) == _canonical(value) for key, value in desired.items())


def _is_current(dashboard: Mapping[str, Any], folder_uid: str, current: Mapping[str, Any]) -> bool:
    meta = current.get("meta", {})
    stored = current.get("dashboard", {})
    return meta.get("folderUid") == folder_uid and _contains(stored, dashboard)
