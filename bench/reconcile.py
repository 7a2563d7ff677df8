"""Reconcile benchmark: 200 deployments through the provisioning engine into every target at
once — a real Prometheus (file_sd targets and the rule catalogue, with reloads), a real
Elasticsearch (one index template per deployment) and the FAKE Grafana (tests/fakes/grafana.py;
no real Grafana can be obtained here).

Passes over every deployment, in the same run:

1. first: the periodic reconcile job on empty upstreams — everything is created;
2. second, unchanged: the same job again. Every run is at its deployment's generation, so no
   deployment is due and no upstream gets a request: this is the production steady state;
3. each force-synced (`POST .../provisioning/sync?force=true`): every target runs against its
   upstream anyway, reads what is there, and must find nothing to write.

Writes are counted from what each target reports it wrote (`Applied.writes`), the fake Grafana's
own counters, and files changed under Prometheus' folders. Target: the second pass issues zero
writes and takes <= 10% of the first.

    uv run python -m bench.reconcile [--deployments 200] [--per-workspace 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from app.core.clock import FrozenClock
from app.core.database import session_scope
from app.core.migrations import upgrade
from app.core.security import Role
from app.core.settings import (
    DatabaseSettings,
    ElasticsearchSettings,
    GrafanaSettings,
    PrometheusSettings,
    SchedulerSettings,
    Settings,
)
from app.deployments.models import Deployment
from app.jobs.scheduler import reconcile_due
from app.main import create_app
from app.models import load_all_models
from app.provisioning.models import ProvisioningRun
from app.provisioning.registry import build_targets
from app.provisioning.service import provisioning
from app.provisioning.targets import Applied, Artifact, DeploymentView, Target
from app.tokens.service import CLI_PRINCIPAL, tokens
from tests.fakes.grafana import FakeGrafana
from tests.harness.components import ComponentDirs, start_elasticsearch, start_prometheus

TARGET_RATIO = 0.10


@dataclass
class Counting:
    """Wraps a target to count the calls and writes one pass caused."""

    inner: Target
    calls: int = 0
    writes: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def render(self, deployment: DeploymentView) -> Sequence[Artifact]:
        return self.inner.render(deployment)

    def configured(self) -> bool:
        return self.inner.configured()

    async def apply(self, deployment: DeploymentView, artifacts: Sequence[Artifact]) -> Applied:
        self.calls += 1
        applied = await self.inner.apply(deployment, artifacts)
        self.writes += applied.writes
        return applied

    async def remove(self, deployment: DeploymentView) -> Applied:
        return await self.inner.remove(deployment)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


@dataclass
class Pass:
    name: str
    seconds: float
    writes: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    grafana_requests: int = 0

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())


async def _pass(
    name: str,
    app: object,
    targets: list[Counting],
    fake: FakeGrafana,
    ids: list[int] | None,
    force: bool = False,
) -> Pass:
    context = app.state.context  # type: ignore[attr-defined]
    for target in targets:
        target.calls = target.writes = 0
    fake.reset_counters()
    started = time.perf_counter()
    if ids is None:
        await reconcile_due(context, targets)  # type: ignore[arg-type]
    else:
        for deployment_id in ids:
            async with session_scope(context.sessionmaker) as session:
                deployment = await session.get(Deployment, deployment_id)
                assert deployment is not None
                await provisioning.reconcile(
                    session,
                    deployment,
                    targets,
                    context.clock,  # type: ignore[arg-type]
                    context.settings.provisioning,
                    force=force,
                )
    elapsed = time.perf_counter() - started
    async with session_scope(context.sessionmaker) as session:
        failed = (
            await session.scalars(
                select(ProvisioningRun).where(ProvisioningRun.status != "succeeded")
            )
        ).all()
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed, e.g. {failed[0].target}: {failed[0].error}")
    return Pass(
        name,
        elapsed,
        {t.name: t.writes for t in targets},
        {t.name: t.calls for t in targets},
        len(fake.requests),
    )


async def run(deployments: int, per_workspace: int) -> list[Pass]:
    """Start the upstreams, register the deployments, and time the passes."""
    load_all_models()
    dirs = ComponentDirs.create()
    prometheus = elasticsearch = None
    try:
        file_sd, rules = dirs.make("file_sd"), dirs.make("rules")
        config = (
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n"
            f"rule_files: ['{rules}/*.yml']\n"
            f"scrape_configs:\n  - job_name: airflow\n    file_sd_configs:\n"
            f"      - files: ['{file_sd}/*.json']\n"
        )
        prometheus = await asyncio.to_thread(start_prometheus, dirs, config)
        elasticsearch = await asyncio.to_thread(start_elasticsearch, dirs)
        with tempfile.TemporaryDirectory() as scratch, FakeGrafana().running() as fake:
            url = f"sqlite:///{Path(scratch) / 'bench.db'}"
            await asyncio.to_thread(upgrade, url)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database=DatabaseSettings(url=url),
                scheduler=SchedulerSettings(enabled=False),
                prometheus=PrometheusSettings(
                    url=prometheus.url, file_sd_dir=file_sd, rules_dir=rules
                ),
                grafana=GrafanaSettings(url=fake.url, token=SecretStr(fake.token)),
                elasticsearch=ElasticsearchSettings(url=elasticsearch.url),
            )
            targets = [Counting(t) for t in build_targets(settings)]
            clock = FrozenClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
            app = create_app(settings, clock, targets=targets)  # type: ignore[arg-type]
            async with app.router.lifespan_context(app):
                ids = await _register(app, deployments, per_workspace)
                return [
                    await _pass("first (job)", app, targets, fake, None),
                    await _pass("second, unchanged (job)", app, targets, fake, None),
                    await _pass("each force-synced", app, targets, fake, ids, force=True),
                ]
    finally:
        for component in (elasticsearch, prometheus):
            if component is not None:
                component.stop()
        dirs.remove()


async def _register(app: object, deployments: int, per_workspace: int) -> list[int]:
    context = app.state.context  # type: ignore[attr-defined]
    async with session_scope(context.sessionmaker) as session:
        created = await tokens.create(
            session,
            CLI_PRINCIPAL,
            name="bench",
            role=Role.SYSTEM_ADMIN,
            workspace_name=None,
            deployment_name=None,
        )
    headers = {"Authorization": f"Bearer {created.token}"}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for index in range(deployments):
            workspace = f"team-{index // per_workspace:03d}"
            if index % per_workspace == 0:
                (
                    await client.post(
                        "/api/v1/workspaces", json={"name": workspace}, headers=headers
                    )
                ).raise_for_status()
            (
                await client.post(
                    f"/api/v1/workspaces/{workspace}/deployments",
                    json={"name": f"dep-{index:04d}"},
                    headers=headers,
                )
            ).raise_for_status()
    async with session_scope(context.sessionmaker) as session:
        return list(await session.scalars(select(Deployment.id).order_by(Deployment.id)))


def main(argv: list[str] | None = None) -> int:
    """Print each pass's writes and wall time, and the second/first ratio."""
    parser = argparse.ArgumentParser(description="Reconcile benchmark over every target")
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--per-workspace", type=int, default=10)
    args = parser.parse_args(argv)
    passes = asyncio.run(run(args.deployments, args.per_workspace))
    print(
        f"reconcile: {args.deployments} deployments, real Prometheus + real Elasticsearch "
        f"+ fake Grafana"
    )
    names = list(passes[0].writes)
    print(
        f"  {'pass':<26}{'wall s':>9}"
        + "".join(f"{n + ' writes':>22}" for n in names)
        + f"{'grafana requests':>18}"
    )
    for result in passes:
        print(
            f"  {result.name:<26}{result.seconds:>9.3f}"
            + "".join(f"{result.writes[n]:>22}" for n in names)
            + f"{result.grafana_requests:>18}"
        )
    first, second, forced = passes
    ratio = second.seconds / first.seconds
    print(f"  second / first wall time: {ratio:.4f} (target <= {TARGET_RATIO})")
    print(
        f"  force-synced / first wall time: {forced.seconds / first.seconds:.3f} "
        f"(every upstream read, nothing written)"
    )
    ok = second.total_writes == 0 and forced.total_writes == 0 and ratio <= TARGET_RATIO
    print("  result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
