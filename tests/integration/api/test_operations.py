"""Operations endpoints and the request boundary: health, readiness, metrics, limits, errors."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from fastapi import FastAPI

from app.core.settings import PrometheusSettings, Settings, SmtpSettings
from app.main import create_app


async def test_healthz_answers_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_unconfigured_integrations_without_failing(
    client: httpx.AsyncClient,
) -> None:
    await asyncio.sleep(0.3)  # let the scheduler beat once
    response = await client.get("/readyz")
    body = response.json()
    assert response.status_code == 200
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["scheduler"]["status"] == "ok"
    assert body["checks"]["prometheus"]["status"] == "not configured"
    assert body["checks"]["smtp"]["status"] == "not configured"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_is_503_when_a_configured_integration_is_down(settings: Settings) -> None:
    port = _closed_port()
    broken = settings.model_copy(
        update={
            "prometheus": PrometheusSettings(url=f"http://127.0.0.1:{port}"),
            "smtp": SmtpSettings(host="127.0.0.1", port=port),
        }
    )
    app: FastAPI = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["prometheus"]["status"] == "down"
    assert body["checks"]["smtp"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "ok"


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.get("/api/v1/deployments/some-name", headers=admin)
    text = (await client.get("/metrics")).text
    assert (
        'sextant_http_requests_total{method="GET",route="/api/v1/deployments/{name}",'
        'status="404"}' in text
    )
    assert "sextant_http_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    generated = await client.get("/healthz")
    assert given.headers["x-request-id"] == "abc-123"
    assert len(generated.headers["x-request-id"]) == 32


async def test_body_over_one_mebibyte_is_413(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    big = b'{"name": "x", "description": "' + b"a" * (1024 * 1024) + b'"}'
    response = await client.post(
        "/api/v1/workspaces",
        content=big,
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"a" * 65536

    response = await client.post(
        "/api/v1/workspaces",
        content=chunks(),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v1/nothing-here", 404, "not_found"),
        ("PUT", "/api/v1/workspaces", 405, "method_not_allowed"),
    ],
)
async def test_routing_errors_use_the_envelope(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    method: str,
    path: str,
    status: int,
    code: str,
) -> None:
    response = await client.request(method, path, headers=admin)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_malformed_json_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        "/api/v1/workspaces",
        content=b'{"name": ',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
