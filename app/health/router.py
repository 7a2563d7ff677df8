"""/healthz, /readyz and /metrics: for load balancers, Kubernetes probes and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.context import ContextDep
from app.health.service import health

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready; the checks say why"}})
async def readyz(context: ContextDep) -> JSONResponse:
    """Ready when the database answers and the scheduler's heartbeat is fresh."""
    ready, checks = await health.readiness(context)
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {
            name: {"status": c.status.value, **({"detail": c.detail} if c.detail else {})}
            for name, c in checks.items()
        },
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Sextant's own metrics in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
