"""A FAKE Grafana: a real HTTP server on 127.0.0.1 that follows Grafana's documented HTTP API.

No Grafana server can be obtained on our machines (see real-components.md), so the Grafana
integration is tested against this fake, and against a real Grafana only when
SEXTANT_TEST_GRAFANA_URL and SEXTANT_TEST_GRAFANA_TOKEN are set. It implements the endpoints
Sextant uses, with the request and response shapes of Grafana's HTTP API documentation
(docs/sources/developers/http_api/{dashboard,folder,data_source,folder_dashboard_search}.md):

- `GET /api/health` (no authentication, like Grafana);
- `GET/POST /api/folders`, `GET/DELETE /api/folders/:uid` (deleting a folder deletes its
  dashboards; 409 when the uid or title is taken);
- `POST /api/dashboards/db` with `dashboard.uid`, `dashboard.version`, `folderUid`, `overwrite`:
  412 `version-mismatch` when the version differs and overwrite is false, 412 `name-exists` for
  another dashboard with the same title in the folder; 200 `{id, uid, url, status, version, slug}`;
- `GET/DELETE /api/dashboards/uid/:uid`, `GET /api/search` (`folderUIDs`, `dashboardUIDs`,
  `type`, `query`);
- `GET /api/datasources/uid/:uid`, `POST /api/datasources`, `PUT /api/datasources/uid/:uid`.

Everything but health needs `Authorization: Bearer <token>` (401 otherwise). Tests steer it:
`fail_with(status)` answers every API call with that status, `delay` slows every answer (to
provoke client timeouts and to observe concurrency), `bump_version_before_next_save(uid)`
simulates someone saving the dashboard between our read and our write, `edit(uid, ...)` changes a
dashboard as a user in the UI would. It counts successful writes and the most requests it had in
flight at once.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAKE_TOKEN = "fake-grafana-service-account-token"
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _message(code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=code)


@dataclass
class _State:
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # uid -> {"dashboard": model, "folderUid": str | None, "version": int, "id": int}
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    fail_status: int | None = None
    fail_remaining: int | None = None
    fail_path: str | None = None
    delay: float = 0.0
    bump_before_save: dict[str, int] = field(default_factory=dict)


class FakeGrafana:
    """A fake Grafana server (not Grafana): the documented HTTP API on 127.0.0.1."""

    def __init__(self, token: str = FAKE_TOKEN) -> None:
        self.token = token
        self._state = _State()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve on 127.0.0.1 (the same port again after a stop)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Grafana did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving: connections are refused until start() (state is kept)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    @contextmanager
    def running(self) -> Iterator[FakeGrafana]:
        """Serve for the duration of a with-block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- steering -------------------------------------------------------------------------

    def fail_with(
        self, status: int | None, times: int | None = None, path: str | None = None
    ) -> None:
        """Answer API calls (to `path` only, if given) with `status`, the next `times` or all."""
        with self._lock:
            self._state.fail_status, self._state.fail_remaining = status, times
            self._state.fail_path = path

    @property
    def delay(self) -> float:
        """Seconds every answer is held back."""
        return self._state.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._state.delay = seconds

    def bump_version_before_next_save(self, uid: str, times: int = 1) -> None:
        """Simulate someone saving dashboard `uid` between our read and our next `times` saves."""
        with self._lock:
            self._state.bump_before_save[uid] = times

    def edit(self, uid: str, **changes: Any) -> None:
        """Change a stored dashboard as a user saving it in the UI would (version + 1)."""
        with self._lock:
            stored = self._state.dashboards[uid]
            stored["dashboard"].update(changes)
            stored["version"] += 1

    def reset_counters(self) -> None:
        """Forget writes, requests and the in-flight maximum (not the content)."""
        with self._lock:
            self._state.writes, self._state.max_in_flight = 0, 0
            self._state.requests = []

    # -- observations ---------------------------------------------------------------------

    @property
    def writes(self) -> int:
        """Successful POST/PUT/DELETE requests since the last reset."""
        return self._state.writes

    @property
    def max_in_flight(self) -> int:
        """The most requests being answered at the same time since the last reset."""
        return self._state.max_in_flight

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request since the last reset."""
        with self._lock:
            return list(self._state.requests)

    def folder(self, uid: str) -> dict[str, Any] | None:
        """A stored folder."""
        with self._lock:
            return copy.deepcopy(self._state.folders.get(uid))

    def dashboard(self, uid: str) -> dict[str, Any] | None:
        """A stored dashboard: {"dashboard", "folderUid", "version", "id"}."""
        with self._lock:
            return copy.deepcopy(self._state.dashboards.get(uid))

    def dashboard_uids(self) -> set[str]:
        """Uids of every stored dashboard."""
        with self._lock:
            return set(self._state.dashboards)

    def datasource(self, uid: str) -> dict[str, Any] | None:
        """A stored data source."""
        with self._lock:
            return copy.deepcopy(self._state.datasources.get(uid))

    def add_dashboard(self, uid: str, title: str, folder_uid: str | None) -> None:
        """Store a dashboard as a user would have made it (for "only ours is removed" tests)."""
        with self._lock:
            self._state.dashboards[uid] = {
                "dashboard": {"uid": uid, "title": title},
                "folderUid": folder_uid,
                "version": 1,
                "id": next(self._ids),
            }

    # -- the HTTP API ---------------------------------------------------------------------

    def _app(self) -> Starlette:
        routes = [
            Route("/api/health", self._health, methods=["GET"]),
            Route("/api/folders", self._folders, methods=["GET", "POST"]),
            Route("/api/folders/{uid}", self._folder, methods=["GET", "DELETE"]),
            Route("/api/dashboards/db", self._save_dashboard, methods=["POST"]),
            Route("/api/dashboards/uid/{uid}", self._dashboard, methods=["GET", "DELETE"]),
            Route("/api/search", self._search, methods=["GET"]),
            Route("/api/datasources", self._create_datasource, methods=["POST"]),
            Route("/api/datasources/uid/{uid}", self._datasource, methods=["GET", "PUT"]),
        ]
        return Starlette(
            routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=self._middleware)]
        )

    async def _middleware(self, request: Request, call_next: Any) -> Response:
        with self._lock:
            self._state.in_flight += 1
            self._state.max_in_flight = max(self._state.max_in_flight, self._state.in_flight)
        try:
            if self._state.delay:
                await asyncio.sleep(self._state.delay)
            response = self._refusal(request) or await call_next(request)
        finally:
            with self._lock:
                self._state.in_flight -= 1
        with self._lock:
            self._state.requests.append((request.method, request.url.path, response.status_code))
            if request.method in WRITE_METHODS and response.status_code == 200:
                self._state.writes += 1
        return response

    def _refusal(self, request: Request) -> Response | None:
        if request.url.path == "/api/health":
            return None
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _message(401, "Unauthorized", messageId="auth.unauthorized", statusCode=401)
        with self._lock:
            status = self._state.fail_status
            if status is None or self._state.fail_path not in (None, request.url.path):
                return None
            if self._state.fail_remaining is not None:
                self._state.fail_remaining -= 1
                if self._state.fail_remaining <= 0:
                    self._state.fail_status = self._state.fail_remaining = None
        return _message(status, f"fake failure {status}")

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"commit": "fake", "database": "ok", "version": "11.0.0-fake"})

    # folders

    def _folder_body(self, folder: dict[str, Any]) -> dict[str, Any]:
        return {
            **folder,
            "url": f"/dashboards/f/{folder['uid']}/{_slug(folder['title'])}",
            "hasAcl": False,
            "canSave": True,
            "canEdit": True,
            "canAdmin": True,
            "createdBy": "admin",
            "updatedBy": "admin",
            "created": "2026-11-24T12:00:00Z",
            "updated": "2026-11-24T12:00:00Z",
        }

    async def _folders(self, request: Request) -> Response:
        if request.method == "GET":
            with self._lock:
                listed = [
                    {"id": f["id"], "uid": f["uid"], "title": f["title"]}
                    for f in self._state.folders.values()
                ]
            return JSONResponse(listed)
        body = await request.json()
        title = body.get("title")
        if not isinstance(title, str) or not title:
            return _message(400, "folder title cannot be empty")
        uid = body.get("uid") or f"fake{next(self._ids)}"
        if len(uid) > 40:
            return _message(400, "uid too long, max 40 characters")
        with self._lock:
            if uid in self._state.folders or any(
                f["title"] == title for f in self._state.folders.values()
            ):
                return _message(409, "a folder with the same name or uid already exists")
            folder = {"id": next(self._ids), "uid": uid, "title": title, "version": 1}
            self._state.folders[uid] = folder
        return JSONResponse(self._folder_body(folder))

    async def _folder(self, request: Request) -> Response:
        uid = request.path_params["uid"]
        with self._lock:
            folder = self._state.folders.get(uid)
            if folder is None:
                return _message(404, "folder not found")
            if request.method == "GET":
                return JSONResponse(self._folder_body(folder))
            del self._state.folders[uid]
            for dashboard_uid in [
                d for d, stored in self._state.dashboards.items() if stored["folderUid"] == uid
            ]:
                del self._state.dashboards[dashboard_uid]
        return JSONResponse({"message": "Folder deleted", "id": folder["id"]})

    # dashboards

    async def _save_dashboard(self, request: Request) -> Response:
        body = await request.json()
        model = body.get("dashboard")
        if not isinstance(model, dict) or not model.get("title"):
            return _message(400, "Dashboard title cannot be empty")
        uid = model.get("uid") or f"fake{next(self._ids)}"
        if len(uid) > 40:
            return _message(400, "uid too long, max 40 characters")
        folder_uid = body.get("folderUid") or None
        overwrite = bool(body.get("overwrite"))
        with self._lock:
            if folder_uid is not None and folder_uid not in self._state.folders:
                return _message(400, "folder not found")
            existing = self._state.dashboards.get(uid)
            if existing is not None and self._state.bump_before_save.get(uid, 0) > 0:
                self._state.bump_before_save[uid] -= 1
                existing["version"] += 1
            same_title = [
                other
                for other, stored in self._state.dashboards.items()
                if other != uid
                and stored["folderUid"] == folder_uid
                and stored["dashboard"].get("title") == model["title"]
            ]
            if same_title:
                if not overwrite:
                    return _message(
                        412,
                        "A dashboard with the same name in the folder already exists",
                        status="name-exists",
                    )
                for other in same_title:
                    del self._state.dashboards[other]
            if (
                existing is not None
                and not overwrite
                and model.get("version") != existing["version"]
            ):
                return _message(
                    412,
                    "The dashboard has been changed by someone else",
                    status="version-mismatch",
                )
            version = 1 if existing is None else existing["version"] + 1
            ident = next(self._ids) if existing is None else existing["id"]
            stored_model = copy.deepcopy(model)
            stored_model.update(id=ident, uid=uid, version=version)
            self._state.dashboards[uid] = {
                "dashboard": stored_model,
                "folderUid": folder_uid,
                "version": version,
                "id": ident,
            }
        slug = _slug(model["title"])
        return JSONResponse(
            {
                "id": ident,
                "uid": uid,
                "url": f"/d/{uid}/{slug}",
                "status": "success",
                "version": version,
                "slug": slug,
            }
        )

    async def _dashboard(self, request: Request) -> Response:
        uid = request.path_params["uid"]
        with self._lock:
            stored = self._state.dashboards.get(uid)
            if stored is None:
                return _message(404, "Dashboard not found")
            if request.method == "DELETE":
                del self._state.dashboards[uid]
                title = stored["dashboard"].get("title", "")
                return JSONResponse(
                    {"title": title, "message": f"Dashboard {title} deleted", "id": stored["id"]}
                )
            model = copy.deepcopy(stored["dashboard"])
            model.update(id=stored["id"], uid=uid, version=stored["version"])
            folder = self._state.folders.get(stored["folderUid"] or "")
        slug = _slug(model.get("title", ""))
        meta = {
            "type": "db",
            "isStarred": False,
            "url": f"/d/{uid}/{slug}",
            "slug": slug,
            "folderId": folder["id"] if folder else 0,
            "folderUid": folder["uid"] if folder else "",
            "folderTitle": folder["title"] if folder else "General",
            "version": stored["version"],
            "canSave": True,
            "canEdit": True,
        }
        return JSONResponse({"dashboard": model, "meta": meta})

    async def _search(self, request: Request) -> Response:
        params = request.query_params
        folder_uids = set(params.getlist("folderUIDs"))
        dashboard_uids = set(params.getlist("dashboardUIDs"))
        kind = params.get("type")
        query = (params.get("query") or "").lower()
        hits: list[dict[str, Any]] = []
        with self._lock:
            if kind in (None, "dash-folder") and not folder_uids and not dashboard_uids:
                for folder in self._state.folders.values():
                    if query in folder["title"].lower():
                        hits.append(
                            {
                                "id": folder["id"],
                                "uid": folder["uid"],
                                "title": folder["title"],
                                "type": "dash-folder",
                                "url": f"/dashboards/f/{folder['uid']}",
                                "tags": [],
                                "isStarred": False,
                            }
                        )
            if kind in (None, "dash-db"):
                for uid, stored in sorted(self._state.dashboards.items()):
                    title = stored["dashboard"].get("title", "")
                    folder = self._state.folders.get(stored["folderUid"] or "")
                    if folder_uids and (stored["folderUid"] or "") not in folder_uids:
                        continue
                    if (dashboard_uids and uid not in dashboard_uids) or query not in title.lower():
                        continue
                    hits.append(
                        {
                            "id": stored["id"],
                            "uid": uid,
                            "title": title,
                            "uri": f"db/{_slug(title)}",
                            "url": f"/d/{uid}/{_slug(title)}",
                            "slug": "",
                            "type": "dash-db",
                            "tags": list(stored["dashboard"].get("tags", [])),
                            "isStarred": False,
                            "folderId": folder["id"] if folder else 0,
                            "folderUid": folder["uid"] if folder else "",
                            "folderTitle": folder["title"] if folder else "",
                            "folderUrl": f"/dashboards/f/{folder['uid']}" if folder else "",
                        }
                    )
        return JSONResponse(hits)

    # data sources

    def _datasource_body(self, stored: dict[str, Any]) -> dict[str, Any]:
        return {
            "orgId": 1,
            "typeLogoUrl": "public/app/plugins/datasource/prometheus/img/prometheus_logo.svg",
            "password": "",
            "user": "",
            "database": "",
            "basicAuth": False,
            "basicAuthUser": "",
            "withCredentials": False,
            "isDefault": False,
            "jsonData": {},
            "secureJsonFields": {},
            "readOnly": False,
            **stored,
        }

    async def _create_datasource(self, request: Request) -> Response:
        body = await request.json()
        if not body.get("name") or not body.get("type"):
            return _message(400, "Validation error, need to specify name and type")
        uid = body.get("uid") or f"fake{next(self._ids)}"
        with self._lock:
            if uid in self._state.datasources or any(
                d["name"] == body["name"] for d in self._state.datasources.values()
            ):
                return _message(409, "data source with the same name already exists")
            stored = {**body, "uid": uid, "id": next(self._ids), "version": 1}
            stored.pop("secureJsonData", None)
            self._state.datasources[uid] = stored
        answer = self._datasource_body(stored)
        return JSONResponse(
            {
                "datasource": answer,
                "id": stored["id"],
                "message": "Datasource added",
                "name": stored["name"],
            }
        )

    async def _datasource(self, request: Request) -> Response:
        uid = request.path_params["uid"]
        with self._lock:
            stored = self._state.datasources.get(uid)
            if stored is None:
                return _message(404, "Data source not found")
            if request.method == "GET":
                return JSONResponse(self._datasource_body(stored))
        body = await request.json()
        with self._lock:
            updated = {**body, "uid": uid, "id": stored["id"], "version": stored["version"] + 1}
            updated.pop("secureJsonData", None)
            self._state.datasources[uid] = updated
        answer = self._datasource_body(updated)
        return JSONResponse(
            {
                "datasource": answer,
                "id": updated["id"],
                "message": "Datasource updated",
                "name": updated["name"],
            }
        )
