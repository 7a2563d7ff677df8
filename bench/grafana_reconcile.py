"""Reconcile benchmark, Grafana part: 200 deployments through the provisioning engine into the
FAKE Grafana (tests/fakes/grafana.py; no real Grafana can be obtained here).

The deployments are spread over workspaces (10 per workspace by default), as dashboards are
per workspace: the first deployment of a workspace writes its folder and dashboards, the others
find them current and write nothing. Four passes over every deployment, same run:

1. first: the periodic reconcile job on an empty Grafana, everything is created;
2. second, unchanged: the same job again; every run is at its deployment's generation, so no
   deployment is due and Grafana gets no request;
3. each synced: every deployment reconciled explicitly (`POST .../provisioning/sync`): the
   engine renders, finds the same content hash and skips the target, still no request;
4. each force-synced (`?force=true`): the target runs and reads Grafana, and must write nothing.

It prints writes, requests and wall time of each, and the second pass's time as a fraction of
the first's (target: zero writes in passes 2-4, and pass 2 <= 10% of pass 1). The fake answers
over real HTTP on 127.0.0.1, in this process, with an optional per-request delay (`--latency`)
to stand in for a remote Grafana. `bench/reconcile.py` can call `run()` and print its figures
next to Elasticsearch's and Prometheus's.

Run with `uv run python -m bench.grafana_reconcile [--deployments 200] [--per-workspace 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select

from app.core.clock import FrozenClock
from app.core.context import AppContext
from app.core.database import session_scope
from app.core.migrations import upgrade
from app.core.security import Role
from app.core.settings import DatabaseSettings, GrafanaSettings, SchedulerSettings, Settings
from app.deployments.models import Deployment
from app.jobs.scheduler import reconcile_due
from app.main import create_app
from app.models import load_all_models
from app.observability.grafana_target import GrafanaTarget
from app.provisioning.models import ProvisioningRun
from app.provisioning.service import provisioning
from app.tokens.service import CLI_PRINCIPAL, tokens
from tests.fakes.grafana import FakeGrafana

TARGET_RATIO = 0.10


@dataclass(frozen=True)
class Pass:
    """What one pass over every deployment cost."""

    name: str
    writes: int
    requests: int
    seconds: float


async def _job_pass(name: str, app: object, fake: FakeGrafana) -> Pass:
    # The periodic job, as production runs it: every deployment with work to do.
    context = app.state.context  # type: ignore[attr-defined]
    fake.reset_counters()
    started = time.perf_counter()
    await reconcile_due(context, app.state.targets)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    await _raise_failures(context)
    return Pass(name, fake.writes, len(fake.requests), elapsed)


async def _each_pass(
    name: str, app: object, fake: FakeGrafana, ids: list[int], force: bool
) -> Pass:
    # Every deployment reconciled explicitly, as `POST .../provisioning/sync` does.
    context = app.state.context  # type: ignore[attr-defined]
    targets = app.state.targets  # type: ignore[attr-defined]
    fake.reset_counters()
    started = time.perf_counter()
    for deployment_id in ids:
        async with session_scope(context.sessionmaker) as session:
            deployment = await session.get(Deployment, deployment_id)
            assert deployment is not None
            await provisioning.reconcile(
                session, deployment, targets, context.clock, context.settings.provisioning,
                force=force,
            )  # fmt: skip
    elapsed = time.perf_counter() - started
    await _raise_failures(context)
    return Pass(name, fake.writes, len(fake.requests), elapsed)


async def _raise_failures(context: AppContext) -> None:
    async with session_scope(context.sessionmaker) as session:
        failed = list(
            await session.scalars(
                select(ProvisioningRun).where(ProvisioningRun.status != "succeeded")
            )
        )
    if failed:
        raise RuntimeError(f"{len(failed)} runs not succeeded, e.g. {failed[0].error}")


async def run(deployments: int = 200, per_workspace: int = 10, latency: float = 0.0) -> list[Pass]:
    """Run the three passes against a fresh fake Grafana and SQLite database."""
    import httpx

    load_all_models()
    with tempfile.TemporaryDirectory() as scratch, FakeGrafana().running() as fake:
        fake.delay = latency
        url = f"sqlite:///{Path(scratch) / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)  # alembic runs its own event loop
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database=DatabaseSettings(url=url),
            scheduler=SchedulerSettings(enabled=False),
            grafana=GrafanaSettings(url=fake.url, token=SecretStr(fake.token), concurrency=4),
        )
        target = GrafanaTarget.from_settings(settings)
        clock = FrozenClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
        app = create_app(settings, clock, targets=[target])
        async with app.router.lifespan_context(app):
            context = app.state.context
            async with session_scope(context.sessionmaker) as session:
                created = await tokens.create(
                    session, CLI_PRINCIPAL, name="bench", role=Role.SYSTEM_ADMIN,
                    workspace_name=None, deployment_name=None,
                )  # fmt: skip
            headers = {"Authorization": f"Bearer {created.token}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for index in range(deployments):
                    workspace = f"team-{index // per_workspace:03d}"
                    if index % per_workspace == 0:
                        answer = await client.post(
                            "/api/v1/workspaces", json={"name": workspace}, headers=headers
                        )
                        answer.raise_for_status()
                    answer = await client.post(
                        f"/api/v1/workspaces/{workspace}/deployments",
                        json={"name": f"dep-{index:04d}"},
                        headers=headers,
                    )
                    answer.raise_for_status()
            async with session_scope(context.sessionmaker) as session:
                ids = list(await session.scalars(select(Deployment.id).order_by(Deployment.id)))
            results = [
                await _job_pass("first", app, fake),
                await _job_pass("second (unchanged)", app, fake),
                await _each_pass("each synced", app, fake, ids, force=False),
                await _each_pass("each force-synced", app, fake, ids, force=True),
            ]
        await target.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    """Print the passes' figures; exit 1 if the second pass misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--per-workspace", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.0, help="fake Grafana delay, seconds")
    args = parser.parse_args(argv)
    passes = asyncio.run(run(args.deployments, args.per_workspace, args.latency))
    workspaces = -(-args.deployments // args.per_workspace)
    print(
        f"grafana (fake): {args.deployments} deployments in {workspaces} workspaces, "
        f"latency {args.latency * 1000:.0f} ms per request"
    )
    for result in passes:
        print(
            f"  {result.name:<20} writes {result.writes:>5}  requests {result.requests:>5}  "
            f"wall {result.seconds:7.3f} s"
        )
    first, second, each, forced = passes
    ratio = second.seconds / first.seconds
    print(f"  second / first wall time: {ratio:.3f} (target <= {TARGET_RATIO})")
    print(f"  each synced / first:      {each.seconds / first.seconds:.3f}")
    print(f"  each force-synced / first: {forced.seconds / first.seconds:.3f}")
    unchanged = (second, each, forced)
    ok = all(p.writes == 0 for p in unchanged) and ratio <= TARGET_RATIO
    print("  result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
