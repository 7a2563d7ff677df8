"""Kubernetes apply benchmark: 50 deployments through the provisioning engine into a real
kube-apiserver (v1.35 with embedded etcd, from tests/harness/kube; loopback only), then again.

Passes, in the same run, over every deployment (Celery executor: 30 objects each, namespace and
Secrets included):

1. first (job): the periodic reconcile job on an empty cluster; everything is created;
2. second, unchanged (job): the job again; every run is at its deployment's generation and its
   content hash, so the engine does not call the runtime at all (production steady state);
3. force-synced: `reconcile(force=True)` per deployment, so the runtime talks to the API server:
   it reads the namespace and lists what it labelled (11 reads), finds every object in sync and
   sends nothing;
4. force-synced, every object re-sent: the same with the in-sync check switched off, so every
   object goes out as a server-side apply (what the runtime would cost without that check); the
   API server finds nothing to change.

Writes are counted twice: what the runtime reports (`Applied.writes`) and, independently, from
the objects' resourceVersions read through the admin's own HTTP client before and after each pass
(outside the timed region). Target (issue 5): the second pass writes nothing (or only no-op
server-side applies) and takes <= 10% of the first.

    uv run python -m bench.k8s_apply [--deployments 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from app.core.clock import FrozenClock
from app.core.database import session_scope
from app.core.migrations import upgrade
from app.core.security import Role
from app.core.settings import DatabaseSettings, SchedulerSettings, Settings
from app.deployments.models import Deployment
from app.jobs.scheduler import reconcile_due
from app.main import create_app
from app.models import load_all_models
from app.provisioning.models import ProvisioningRun
from app.provisioning.service import provisioning
from app.provisioning.targets import Applied, Artifact, DeploymentView
from app.runtime import kubernetes_manifests as manifests
from app.runtime.kubernetes import KubernetesRuntime
from app.tokens.service import CLI_PRINCIPAL, tokens
from tests.harness.components import ComponentDirs
from tests.harness.kubernetes import KubeApiServer, start_kube_apiserver
from tests.integration.runtime.kube_support import settings_for, versions

TARGET_RATIO = 0.10


@dataclass
class Pass:
    name: str
    seconds: float
    reported_writes: int
    changed_objects: int
    requests: int
    runtime_calls: int


class CountingRuntime(KubernetesRuntime):
    """The runtime, counting its apply calls, reported writes and API requests."""

    calls = 0
    writes = 0
    requests = 0

    async def apply(self, deployment: DeploymentView, artifacts: Any) -> Applied:
        self.calls += 1
        applied = await super().apply(deployment, artifacts)
        self.writes += applied.writes
        return applied

    def count_requests(self) -> None:
        """Wrap the client's request method (every API call goes through it)."""
        inner = self.client.request

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            return await inner(*args, **kwargs)

        self.client.request = counted  # type: ignore[method-assign]

    def reset(self) -> None:
        self.calls = self.writes = self.requests = 0

    def render(self, deployment: DeploymentView) -> list[Artifact]:
        return list(super().render(deployment))


@contextmanager
def in_sync_check_off() -> Iterator[None]:
    original = manifests.in_sync
    manifests.in_sync = lambda live, manifest: False
    try:
        yield
    finally:
        manifests.in_sync = original


def cluster_versions(kube: httpx.Client, names: list[str]) -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for name in names:
        for (kind, object_name), version in versions(kube, name).items():
            found[(name, kind, object_name)] = version
    return found


def changed(before: dict[Any, str], after: dict[Any, str]) -> int:
    keys = set(before) | set(after)
    return sum(1 for key in keys if before.get(key) != after.get(key))


async def _pass(
    name: str,
    app: Any,
    runtime: CountingRuntime,
    kube: httpx.Client,
    names: list[str],
    ids: list[int] | None,
) -> Pass:
    context = app.state.context
    before = await asyncio.to_thread(cluster_versions, kube, names)
    runtime.reset()
    started = time.perf_counter()
    if ids is None:
        await reconcile_due(context, [runtime])
    else:
        for deployment_id in ids:
            async with session_scope(context.sessionmaker) as session:
                deployment = await session.get(Deployment, deployment_id)
                assert deployment is not None
                await provisioning.reconcile(
                    session,
                    deployment,
                    [runtime],
                    context.clock,
                    context.settings.provisioning,
                    force=True,
                )
    elapsed = time.perf_counter() - started
    after = await asyncio.to_thread(cluster_versions, kube, names)
    async with session_scope(context.sessionmaker) as session:
        failed = (
            await session.scalars(
                select(ProvisioningRun).where(ProvisioningRun.status != "succeeded")
            )
        ).all()
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed, e.g. {failed[0].error}")
    return Pass(
        name, elapsed, runtime.writes, changed(before, after), runtime.requests, runtime.calls
    )


async def _register(app: Any, deployments: int) -> tuple[list[int], list[str]]:
    context = app.state.context
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
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for index in range(deployments):
            workspace = f"team-{index // 10:03d}"
            if index % 10 == 0:
                response = await client.post(
                    "/api/v1/workspaces", json={"name": workspace}, headers=headers
                )
                response.raise_for_status()
            response = await client.post(
                f"/api/v1/workspaces/{workspace}/deployments",
                json={"name": f"dep-{index:04d}"},
                headers=headers,
            )
            response.raise_for_status()
    async with session_scope(context.sessionmaker) as session:
        rows = (await session.execute(select(Deployment.id, Deployment.name))).all()
    return [row.id for row in rows], [row.name for row in rows]


async def run(deployments: int) -> tuple[list[Pass], str]:
    """Start the API server, register the deployments, and time the passes."""
    load_all_models()
    dirs = ComponentDirs.create()
    server: KubeApiServer | None = None
    try:
        server = await asyncio.to_thread(start_kube_apiserver, dirs)
        with tempfile.TemporaryDirectory() as scratch, server.client() as kube:
            version = kube.get("/version").json()["gitVersion"]
            url = f"sqlite:///{Path(scratch) / 'bench.db'}"
            await asyncio.to_thread(upgrade, url)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database=DatabaseSettings(url=url),
                scheduler=SchedulerSettings(enabled=False),
            )
            runtime = CountingRuntime(settings_for(server))
            runtime.count_requests()
            clock = FrozenClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
            app = create_app(settings, clock, targets=[runtime])
            async with app.router.lifespan_context(app):
                ids, names = await _register(app, deployments)
                passes = [
                    await _pass("first (job)", app, runtime, kube, names, None),
                    await _pass("second, unchanged (job)", app, runtime, kube, names, None),
                    await _pass("force-synced", app, runtime, kube, names, ids),
                ]
                with in_sync_check_off():
                    passes.append(
                        await _pass("force-synced, all re-sent", app, runtime, kube, names, ids)
                    )
            return passes, version
    finally:
        if server is not None:
            server.stop()
        dirs.remove()


def main(argv: list[str] | None = None) -> int:
    """Print each pass's writes, requests and wall time, and the ratios to the first."""
    parser = argparse.ArgumentParser(description="Kubernetes apply benchmark")
    parser.add_argument("--deployments", type=int, default=50)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    passes, version = asyncio.run(run(args.deployments))
    first = passes[0]
    print(
        f"k8s_apply: {args.deployments} deployments (CeleryExecutor), kube-apiserver {version}; "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"  {'pass':<28}{'wall s':>9}{'ratio':>8}{'runtime calls':>15}{'API requests':>14}"
        f"{'writes (reported)':>19}{'objects changed':>17}"
    )
    for result in passes:
        print(
            f"  {result.name:<28}{result.seconds:>9.3f}{result.seconds / first.seconds:>8.3f}"
            f"{result.runtime_calls:>15}{result.requests:>14}{result.reported_writes:>19}"
            f"{result.changed_objects:>17}"
        )
    second = passes[1]
    ratio = second.seconds / first.seconds
    honest = all(p.reported_writes == p.changed_objects for p in passes)
    quiet = all(p.changed_objects == 0 for p in passes[1:])
    print(f"  second / first wall time: {ratio:.4f} (target <= {TARGET_RATIO})")
    print(f"  writes reported == objects changed in every pass: {honest}")
    ok = quiet and honest and ratio <= TARGET_RATIO
    print("  result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
