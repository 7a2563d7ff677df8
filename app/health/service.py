"""Liveness and readiness: is the process alive, and can it do its work right now?

Readiness needs the database and a fresh scheduler heartbeat; each configured integration is
reported as `ok` or `down`, and one that is not configured as `not configured` (never an error:
Sextant works without them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import text

from app.core.context import AppContext
from app.integrations.probes import http_ready, tcp_ready


class CheckStatus(StrEnum):
    OK = "ok"
    DOWN = "down"
    NOT_CONFIGURED = "not configured"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Check:
    status: CheckStatus
    detail: str = ""

    @classmethod
    def of(cls, reason: str | None) -> Check:
        """OK when there is no failure reason, DOWN with it otherwise."""
        return cls(CheckStatus.OK) if reason is None else cls(CheckStatus.DOWN, reason)


class HealthService:
    async def readiness(self, context: AppContext) -> tuple[bool, dict[str, Check]]:
        """Whether the service is ready, with every check that decided it."""
        names = [
            "database",
            "scheduler",
            "prometheus",
            "alertmanager",
            "grafana",
            "elasticsearch",
            "smtp",
            "kubernetes",
        ]
        results = await asyncio.gather(
            self._database(context),
            self._scheduler(context),
            self._prometheus(context),
            self._alertmanager(context),
            self._grafana(context),
            self._elasticsearch(context),
            self._smtp(context),
            self._kubernetes(context),
        )
        checks = dict(zip(names, results, strict=True))
        ready = all(c.status is not CheckStatus.DOWN for c in checks.values())
        return ready, checks

    async def _database(self, context: AppContext) -> Check:
        try:
            async with asyncio.timeout(3):
                async with context.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its kind
            return Check(CheckStatus.DOWN, type(exc).__name__)
        return Check(CheckStatus.OK)

    async def _scheduler(self, context: AppContext) -> Check:
        settings = context.settings.scheduler
        if not settings.enabled:
            return Check(CheckStatus.DISABLED)
        beat = context.scheduler_heartbeat
        if beat is None:
            # Give a just-started process the same grace as a stale heartbeat.
            age = (context.clock.now() - context.started_at).total_seconds()
            if age <= settings.heartbeat_stale_after:
                return Check(CheckStatus.OK, "starting")
            return Check(CheckStatus.DOWN, "no scheduler heartbeat yet")
        age = (context.clock.now() - beat).total_seconds()
        if age > settings.heartbeat_stale_after:
            return Check(CheckStatus.DOWN, f"last scheduler heartbeat {age:.0f}s ago")
        return Check(CheckStatus.OK)

    async def _prometheus(self, context: AppContext) -> Check:
        url = context.settings.prometheus.url
        return (
            Check(CheckStatus.NOT_CONFIGURED)
            if not url
            else Check.of(await http_ready(url, "/-/ready"))
        )

    async def _alertmanager(self, context: AppContext) -> Check:
        url = context.settings.alertmanager.url
        return (
            Check(CheckStatus.NOT_CONFIGURED)
            if not url
            else Check.of(await http_ready(url, "/-/ready"))
        )

    async def _grafana(self, context: AppContext) -> Check:
        url = context.settings.grafana.url
        return (
            Check(CheckStatus.NOT_CONFIGURED)
            if not url
            else Check.of(await http_ready(url, "/api/health"))
        )

    async def _elasticsearch(self, context: AppContext) -> Check:
        settings = context.settings.elasticsearch
        return (
            Check(CheckStatus.NOT_CONFIGURED)
            if not settings.url
            else Check.of(await http_ready(settings.url, "/_cluster/health"))
        )

    async def _smtp(self, context: AppContext) -> Check:
        settings = context.settings.smtp
        return (
            Check(CheckStatus.NOT_CONFIGURED)
            if not settings.host
            else Check.of(await tcp_ready(settings.host, settings.port))
        )

    async def _kubernetes(self, context: AppContext) -> Check:
        # The Kubernetes runtime brings its own client and check; until it is selected there is
        # nothing to reach.
        if context.settings.runtime.value != "kubernetes":
            return Check(CheckStatus.NOT_CONFIGURED)
        return Check(CheckStatus.DOWN, "the kubernetes runtime is not available in this version")


health = HealthService()
