"""HTTP to an Airflow deployment's own servers: the api-server's REST API and Flower.

The local runtime asks Flower which Celery worker runs how many tasks (to pick idle workers on
scale-down), and `sextant demo` and the end-to-end tests use the REST API to unpause and trigger
DAGs and follow their runs. Every call names the server in its error and never echoes a token.

The local runtime's api-server uses Airflow's SimpleAuthManager with every user an admin (it
listens on 127.0.0.1 only), so `GET /auth/token` hands out a token without a password.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from app.integrations.errors import IntegrationError, TransientError, for_status

API = "airflow api-server"
FLOWER = "flower"


async def _request(
    upstream: str,
    method: str,
    url: str,
    *,
    token: str | None = None,
    json: Any = None,
    timeout: float = 10.0,
) -> Any:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.request(method, url, headers=headers, json=json)
    except httpx.HTTPError as exc:
        raise TransientError(upstream, f"{type(exc).__name__} on {method} {url}") from exc
    if not response.is_success:
        detail = response.text[:200]
        raise for_status(upstream, response.status_code, f"{method} {url}: {detail}")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise TransientError(upstream, f"{method} {url}: not JSON") from exc


class AirflowApi:
    """The REST API (v2) of one Airflow 3 api-server."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        if self._token is None:
            answer = await _request(API, "GET", f"{self.base_url}/auth/token", timeout=self.timeout)
            self._token = str(answer["access_token"])
        return await _request(
            API, method, self.base_url + path, token=self._token, json=json, timeout=self.timeout
        )

    async def health(self) -> dict[str, Any]:
        """`/api/v2/monitor/health`: metadatabase, scheduler, triggerer, dag processor."""
        answer = await _request(
            API, "GET", f"{self.base_url}/api/v2/monitor/health", timeout=self.timeout
        )
        return dict(answer or {})

    async def dag_exists(self, dag_id: str) -> bool:
        """Whether the dag-processor has parsed `dag_id` into the database."""
        try:
            await self._call("GET", f"/api/v2/dags/{dag_id}")
        except IntegrationError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise
        return True

    async def unpause(self, dag_id: str) -> None:
        await self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    async def trigger(self, dag_id: str) -> str:
        """Start a run of `dag_id` now; returns its run id."""
        answer = await self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        return str(answer["dag_run_id"])

    async def run_state(self, dag_id: str, run_id: str) -> str:
        """The state of a DAG run: queued, running, success or failed."""
        answer = await self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return str(answer["state"])

    async def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1
    ) -> list[Any]:
        """A task try's log as the api-server serves it (the `content` of its answer)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        answer = await self._call("GET", path + "?full_content=true")
        return list(answer.get("content") or [])


async def flower_active_tasks(base_url: str, timeout: float = 10.0) -> dict[str, int]:
    """Tasks each Celery worker (`name@host`) has taken and not finished, as Flower knows it.

    The workers come from a live inspection (so idle ones are listed with 0). Their tasks come
    from two views, and per worker the larger count wins: Flower's event stream (received or
    started, not yet finished) and a live inspection of that worker over the broker (`active`
    and `reserved`). Flower can miss a task's events (a full test run once saw a worker's only
    task never reported), and an inspection can go unanswered by a busy worker; a busy worker
    must not look idle because one of the two missed it.
    """
    base = base_url.rstrip("/")
    workers = await _request(FLOWER, "GET", f"{base}/api/workers?refresh=true", timeout=timeout)
    counts = {str(name): 0 for name in dict(workers or {})}
    for state in ("RECEIVED", "STARTED"):
        tasks = await _request(
            FLOWER, "GET", f"{base}/api/tasks?state={state}&limit=10000", timeout=timeout
        )
        for task in dict(tasks or {}).values():
            worker = task.get("worker") if isinstance(task, dict) else None
            if worker:
                counts[str(worker)] = counts.get(str(worker), 0) + 1
    names = sorted(counts)
    inspected = await asyncio.gather(
        *(flower_inspected_tasks(base, name, timeout) for name in names)
    )
    for name, count in zip(names, inspected, strict=True):
        if count is not None:
            counts[name] = max(counts[name], count)
    return counts


async def flower_inspected_tasks(base: str, worker: str, timeout: float = 10.0) -> int | None:
    """The tasks one worker says it is running or holds (`active` + `reserved`); None if unsaid."""
    url = f"{base}/api/workers?refresh=true&workername={quote(worker, safe='')}"
    try:
        answer = await _request(FLOWER, "GET", url, timeout=timeout)
    except IntegrationError:
        return None
    info = dict(answer or {}).get(worker)
    if not isinstance(info, dict):
        return None
    lists = [info.get(key) for key in ("active", "reserved")]
    if not any(isinstance(tasks, list) for tasks in lists):
        return None
    return sum(len(tasks) for tasks in lists if isinstance(tasks, list))
