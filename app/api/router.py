"""Mounts every domain's routes under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from app.alerting.router import router as alerting_router
from app.audit.router import router as audit_router
from app.deployments.router import router as deployments_router
from app.logs.router import router as logs_router
from app.provisioning.router import router as provisioning_router
from app.recipients.router import router as recipients_router
from app.scaling.router import router as scaling_router
from app.tokens.router import router as tokens_router
from app.workspaces.router import router as workspaces_router

api_router = APIRouter(prefix="/api/v1")
for router in (
    workspaces_router,
    deployments_router,
    recipients_router,
    provisioning_router,
    alerting_router,
    scaling_router,
    tokens_router,
    audit_router,
    logs_router,
):
    api_router.include_router(router)
