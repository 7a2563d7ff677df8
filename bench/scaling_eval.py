"""Scaling decision benchmark: one fleet-wide decision round (Sextant) against one query per
deployment (KEDA's Prometheus scaler model), for 1,000 deployments in a real Prometheus, same run.

How:

1. A synthetic fleet's executor gauges (`airflow_executor_queued_tasks`,
   `airflow_executor_running_tasks`, labelled `workspace`, `deployment`, `job`, `instance` as
   Sextant's scrape targets make them; a sample every 15 s from 10 minutes before the run to 15
   minutes after it, values from a fixed seed) are written as OpenMetrics and backfilled with
   `promtool tsdb create-blocks-from openmetrics` into a real Prometheus 2.42 (test harness).
2. Sextant (in process, SQLite, its embedded default) holds the 1,000 deployments, each with an
   enabled scaling policy, and runs the real `scale_workers` job (lease, one fleet query,
   the policy for each deployment, decisions and loop state written, metrics exported). No
   runtime is configured, so changes are recorded but not applied (the runtime's cost is the
   same in every model). The job's Prometheus call is timed on its own (the query phase).
3. The floor: one bare `GET /api/v1/query` of exactly Sextant's fleet query through a minimal
   keep-alive client (bench/alert_eval.RawHttp), body read and discarded.
4. Per-deployment: KEDA's model, the same load asked once per deployment
   (`sum(airflow_executor_queued_tasks{deployment="d"}) + sum(airflow_executor_running_tasks
   {deployment="d"})`), through the same minimal client, sequentially and 20 at a time
   (Prometheus' default query concurrency).
5. Outside every timed region, Prometheus' own evaluation time (`stats=all`) of the fleet query
   and of all the per-deployment queries, and the ratio a round costing no more than the bare
   query would reach: what bounds the speed-up before any of Sextant's work.

Correctness: the per-deployment answers equal the fleet query's per-deployment loads.
Targets (the issue's): per-deployment sequential >= 20x the fleet round; the fleet round within
1.5x of one bare query (printed for the whole job and for its query phase).

Run: `uv run python -m bench.scaling_eval [--deployments 1000] [--repeat 7]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from app.alerting.dependencies import METRIC_SOURCE
from app.core.clock import FrozenClock
from app.core.database import session_scope
from app.core.migrations import upgrade
from app.core.settings import DatabaseSettings, PrometheusSettings, SchedulerSettings, Settings
from app.deployments.models import Deployment
from app.jobs.scheduler import scale_workers
from app.main import create_app
from app.models import load_all_models
from app.scaling.load import FLEET_LOAD_QUERY, fleet_load
from app.scaling.models import ScalingPolicy
from bench._alerting_common import load_average, median, seed_fleet, table, verdict
from bench.alert_eval import RawHttp, TimedSource
from tests.harness.availability import INSTALL_HINT, find_binary
from tests.harness.components import ComponentDirs, PrometheusServer, start_prometheus

TARGET_SPEEDUP = 20.0
TARGET_FLOOR_RATIO = 1.5
CONCURRENCY = 20
SCRAPE = 15
PAST, FUTURE = 10 * 60, 15 * 60
PER_WORKER = 16
CONFIG = "global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n"


def fleet(count: int) -> list[tuple[str, str, int, int]]:
    """(workspace, deployment, queued, running) with a fixed seed."""
    rng = random.Random(6)
    out = []
    for index in range(count):
        queued = rng.choice([0, 0, 0, 2, 5, 40])
        running = rng.randint(0, 48)
        out.append((f"ws-{index // 10:03d}", f"dep-{index:04d}", queued, running))
    return out


def write_openmetrics(path: Path, deployments: list[tuple[str, str, int, int]], now: int) -> None:
    """Both gauges of every deployment, a sample every SCRAPE seconds around `now`."""
    with path.open("w") as out:
        for metric, column in (("queued", 2), ("running", 3)):
            name = f"airflow_executor_{metric}_tasks"
            out.write(f"# TYPE {name} gauge\n")
            for row in deployments:
                labels = (
                    f'deployment="{row[1]}",instance="{row[1]}-statsd:9102",job="airflow",'
                    f'workspace="{row[0]}"'
                )
                for at in range(now - PAST, now + FUTURE, SCRAPE):
                    out.write(f"{name}{{{labels}}} {row[column]} {at}\n")
        out.write("# EOF\n")


def keda_query(deployment: str) -> str:
    """What a KEDA Prometheus trigger of one deployment asks (a single-element vector)."""
    selector = f'{{deployment="{deployment}"}}'
    return (
        f"sum(airflow_executor_queued_tasks{selector}) + "
        f"sum(airflow_executor_running_tasks{selector})"
    )


async def per_deployment(
    prometheus: PrometheusServer, names: list[str], concurrency: int
) -> tuple[float, dict[str, float]]:
    """Wall seconds for one query per deployment, and each deployment's load."""
    pending = iter(names)
    found: dict[str, float] = {}
    clients = [RawHttp(prometheus.host, prometheus.port) for _ in range(concurrency)]

    async def worker(client: RawHttp) -> None:
        for name in pending:
            answer = json.loads(await client.query(keda_query(name)))
            result = answer["data"]["result"]
            if result:
                found[name] = float(result[0]["value"][1])

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for client in clients:
            client.close()
    return time.perf_counter() - started, found


async def evaluation_seconds(prometheus: PrometheusServer, exprs: list[str]) -> float:
    """Prometheus' own evaluation time (`stats=all`, `execTotalTime`) of these queries, asked one
    after another, in total: the part of each answer no client and no transport can save."""
    client = RawHttp(prometheus.host, prometheus.port)
    total = 0.0
    try:
        for expr in exprs:
            query = urllib.parse.urlencode({"query": expr, "stats": "all"})
            answer = json.loads(await client.get(f"/api/v1/query?{query}"))
            total += float(answer["data"]["stats"]["timings"]["execTotalTime"])
    finally:
        client.close()
    return total


async def run(args: argparse.Namespace) -> int:
    load_all_models()
    deployments = fleet(args.deployments)
    promtool = find_binary(
        "prometheus", "promtool", hint=f"apt-get install prometheus ({INSTALL_HINT})"
    )
    dirs = ComponentDirs.create()
    prometheus: PrometheusServer | None = None
    try:
        prometheus = await asyncio.to_thread(start_prometheus, dirs, CONFIG)
        await asyncio.to_thread(prometheus.stop)
        source = dirs.make("backfill") / "fleet.om"
        write_openmetrics(source, deployments, int(time.time()))
        result = subprocess.run(
            [str(promtool), "tsdb", "create-blocks-from", "openmetrics", "-q", str(source),
             str(prometheus.data_dir)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"promtool failed: {result.stderr[-2000:]}")
        await asyncio.to_thread(prometheus.start)
        print(
            f"scaling_eval: {len(deployments)} deployments, real Prometheus 2.42 "
            f"(pid {prometheus.process.pid}); Sextant on SQLite; load average {load_average()}",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as scratch:
            url = f"sqlite:///{Path(scratch) / 'bench.db'}"
            await asyncio.to_thread(upgrade, url)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database=DatabaseSettings(url=url),
                scheduler=SchedulerSettings(enabled=False),
                prometheus=PrometheusSettings(url=prometheus.url, timeout=60),
            )
            clock = FrozenClock(datetime.now(UTC))
            app = create_app(settings, clock, targets=[])
            async with app.router.lifespan_context(app):
                context = app.state.context
                seeded = await seed_fleet(
                    context.sessionmaker, [(w, d) for w, d, _, _ in deployments], 0
                )
                async with session_scope(context.sessionmaker) as session:
                    loads = {d: q + r for _, d, q, r in deployments}
                    for row in (await session.scalars(select(Deployment))).all():
                        want = max(1, min(10, math.ceil(loads[row.name] / PER_WORKER)))
                        row.components = {"workers": {"replicas": want}}
                        row.worker_concurrency = PER_WORKER
                    for one in seeded:
                        session.add(ScalingPolicy(deployment_id=one.id, enabled=True,
                                                  recommendations=[]))  # fmt: skip
                timed = TimedSource(context.extras[METRIC_SOURCE])
                context.extras[METRIC_SOURCE] = timed
                return await measure(args, prometheus, context, clock, timed, deployments)
    finally:
        if prometheus is not None:
            prometheus.stop()
        dirs.remove()


async def measure(
    args: argparse.Namespace,
    prometheus: PrometheusServer,
    context: object,
    clock: FrozenClock,
    timed: TimedSource,
    deployments: list[tuple[str, str, int, int]],
) -> int:
    names = [d for _, d, _, _ in deployments]
    floor_client = RawHttp(prometheus.host, prometheus.port)
    floors, rounds, phases = [], [], []
    try:
        await floor_client.query(FLEET_LOAD_QUERY)  # warm both paths once
        await scale_workers(context, [])  # type: ignore[arg-type]
        for _ in range(args.repeat):
            started = time.perf_counter()
            await floor_client.query(FLEET_LOAD_QUERY)
            floors.append(time.perf_counter() - started)
            clock.advance(10)
            timed.calls.clear()
            started = time.perf_counter()
            await scale_workers(context, [])  # type: ignore[arg-type]
            rounds.append(time.perf_counter() - started)
            phases.append(timed.total())
    finally:
        floor_client.close()
    sequential, found = await per_deployment(prometheus, names, 1)
    concurrent, _ = await per_deployment(prometheus, names, CONCURRENCY)
    # Outside every timed region: what Prometheus itself spends evaluating each model's queries.
    fleet_eval = median(
        [await evaluation_seconds(prometheus, [FLEET_LOAD_QUERY]) for _ in range(args.repeat)]
    )
    keda_eval = await evaluation_seconds(prometheus, [keda_query(name) for name in names])
    fleet_values = fleet_load(await timed.inner.instant(FLEET_LOAD_QUERY))
    expected = {d: float(q + r) for _, d, q, r in deployments}
    from_fleet = {}
    for name in names:
        seen = fleet_values.observation(name, None)
        if seen.queued is not None and seen.running is not None:
            from_fleet[name] = seen.queued + seen.running
    same = found == expected == from_fleet
    floor, job, phase = median(floors), median(rounds), median(phases)
    print(
        table(
            ["", "seconds", "ratio"],
            [
                ["floor: one bare fleet query", floor, ""],
                ["Sextant query phase (median)", phase, f"{phase / floor:.2f}x the floor"],
                ["Sextant decision round (median)", job, f"{job / floor:.2f}x the floor"],
                [
                    f"per-deployment, sequential ({len(names)} queries)",
                    sequential,
                    f"{sequential / job:.1f}x the round",
                ],
                [
                    f"per-deployment, {CONCURRENCY} at a time",
                    concurrent,
                    f"{concurrent / job:.1f}x the round",
                ],
            ],
        )
    )
    print(
        f"Prometheus' own evaluation (stats=all): the fleet query {fleet_eval * 1000:.1f} ms "
        f"(median); the {len(names)} per-deployment queries {keda_eval * 1000:.1f} ms in all "
        f"({keda_eval / fleet_eval:.1f}x). Even a round costing no more than the bare query "
        f"would be {sequential / floor:.1f}x faster than the sequential per-deployment queries."
    )
    speedup_ok = sequential / job >= TARGET_SPEEDUP
    floor_ok = job / floor <= TARGET_FLOOR_RATIO
    print(f"same loads per deployment (fleet, per-deployment, generated): {verdict(same)}")
    print(
        f"per-deployment sequential / fleet round = {sequential / job:.1f}x "
        f"(target >= {TARGET_SPEEDUP:g}x): {verdict(speedup_ok)}"
    )
    print(
        f"per-deployment sequential / Sextant query phase = {sequential / phase:.1f}x; "
        f"20 at a time / query phase = {concurrent / phase:.1f}x"
    )
    print(
        f"fleet round / bare query = {job / floor:.2f}x (target <= {TARGET_FLOOR_RATIO:g}x): "
        f"{verdict(floor_ok)}; query phase alone {phase / floor:.2f}x: "
        f"{verdict(phase / floor <= TARGET_FLOOR_RATIO)}"
    )
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
