"""Alert evaluation benchmark: the whole rule catalogue for 1,000 deployments, fleet-wide (Sextant)
against one query per deployment (Prometheus rule-per-deployment, KEDA-style scalers), same run.

Why: Sextant's evaluator asks Prometheus one query per rule for the whole fleet (`by
(deployment)` is in each rule's measure) and applies each deployment's threshold itself. The
alternative every per-deployment tool takes is the rule's expression restricted to one
deployment, N times. The issue's targets: fleet-wide >= 20x faster than per-deployment, and
Sextant's query phase within 1.5x of the bare query that returns the same vector.

How:

1. A synthetic fleet (bench/_alerting_fleet.py: 1,000 deployments in 100 workspaces, ~29
   series each, named and labelled as our statsd mapping and scrape targets make them, some
   deployments stalled, late, failing, down...) is written as OpenMetrics and turned into TSDB
   blocks with `promtool tsdb create-blocks-from openmetrics`, inside the data folder of a real
   Prometheus (Debian 2.42, started by the test harness, stopped, backfilled, started again).
2. Sextant: the real `evaluate_alerts` job (lease, `AlertEvaluator.evaluate` over every rule of
   `alert_rules/`, state machine, outbox, commit) on a SQLite database (Sextant's embedded
   default) holding the 1,000 deployments and one recipient each, against that Prometheus through
   Sextant's own client (prometheus-api-client in a worker thread). Rounds: the first (alerts
   become pending), the one where they fire (~165 notifications written to the outbox), then
   steady rounds; the job's Prometheus calls are timed separately (the query phase).
3. The floor: for each rule, a single bare `GET /api/v1/query` of the catalogue's own query
   for the rule's vector (its measure; the whole expression for the fleet rule) over a
   kept-alive connection of a minimal client, body read and discarded: the same vector Sextant
   gets, with no client library, no JSON decoding and no per-deployment reduction. Beside it,
   the same for exactly what Sextant sends in a steady round: for the heartbeat rules only the
   increases since its previous round (app/alerting/heartbeat.py), nothing for the fleet rule
   (counted from the scheduler heartbeat's values). "Sextant's query phase" is, per rule, what
   the evaluator does to get its per-deployment values: `PrometheusSource.instant(query)`
   (HTTP, JSON, samples) and the reduction (`per_deployment(...)` or the heartbeat memory).
   Bare and Sextant queries alternate, rule by rule, for `--repeat` rounds; medians summed.
4. Per-deployment: each rule's full expression (with its threshold, as a Prometheus alerting
   rule is written) with `deployment="<name>"` injected into every selector (Sextant's PromQL
   parser finds them), one HTTP query per (rule, deployment), over a kept-alive httpx
   connection (leaner than Sextant's client: the baseline gets the faster client), first
   sequentially (the target's baseline), then 20 at a time (Prometheus' default
   --query.max-concurrency). The fleet-scope rule is one query in both methods.
5. Inside Prometheus (no HTTP at all): the catalogue's rule groups as written (fleet-wide)
   against a group of the 11,000 per-deployment rules, from
   `prometheus_rule_group_last_duration_seconds` (skip with --no-rule-groups).

Correctness: per rule, the deployments whose condition holds now according to the fleet-wide
values (each compared with the rule's default threshold) and according to the per-deployment
queries (non-empty answer) must be the same, and equal to the fleet's ground truth; after the
firing round, the evaluator's firing alerts in the database must be exactly those.

Run: `uv run python -m bench.alert_eval [--deployments 1000] [--repeat 7]` (about 2-3 minutes on
2 cores; everything on 127.0.0.1, every component stopped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import func, select

from app.alerting.dependencies import METRIC_SOURCE, metric_source_of
from app.alerting.heartbeat import (
    MARGIN,
    HeartbeatMemory,
    ages_per_deployment,
    heartbeat_count,
    heartbeat_counter,
    increases_query,
    silence,
)
from app.alerting.measure import (
    MetricSource,
    answers_any_promql,
    per_deployment,
    source_identity,
)
from app.alerting.models import Alert, Notification
from app.core.clock import FrozenClock
from app.core.context import AppContext
from app.core.database import session_scope
from app.core.migrations import upgrade
from app.core.settings import (
    AlertsSettings,
    DatabaseSettings,
    PrometheusSettings,
    SchedulerSettings,
    Settings,
)
from app.deployments.models import Deployment
from app.integrations.prometheus import RangeSeries, Sample
from app.jobs.scheduler import evaluate_alerts
from app.main import create_app
from app.models import load_all_models
from app.observability.rules import AlertRule, Scope, catalogue
from bench._alerting_common import (
    cpu_seconds,
    load_average,
    median,
    p95,
    seed_fleet,
    table,
    verdict,
)
from bench._alerting_fleet import Fleet, build_fleet, inject_deployment
from bench._alerting_fleet import write_openmetrics as write_fleet
from tests.harness.availability import INSTALL_HINT, find_binary
from tests.harness.components import ComponentDirs, PrometheusServer, start_prometheus

TARGET_SPEEDUP = 20.0
TARGET_FLOOR_RATIO = 1.5
CONCURRENCY = 20  # Prometheus' default --query.max-concurrency
FUTURE = 15 * 60  # seconds of samples after generation time (the run's lifetime)
PROMETHEUS_CONFIG = "global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n"
RULES_CONFIG = "global:\n  scrape_interval: 15s\n  evaluation_interval: 10s\n"


class TimedSource:
    """A MetricSource that times every call of the one it wraps (the evaluator's query phase)."""

    def __init__(self, inner: MetricSource) -> None:
        self.inner = inner
        self.any_promql = answers_any_promql(inner)
        self.identity = source_identity(inner)
        self.calls: list[tuple[str, float]] = []

    async def instant(self, expr: str) -> Sequence[Sample]:
        started = time.perf_counter()
        try:
            return await self.inner.instant(expr)
        finally:
            self.calls.append((expr, time.perf_counter() - started))

    async def range(
        self, expr: str, start: float, end: float, step: float
    ) -> Sequence[RangeSeries]:
        return await self.inner.range(expr, start, end, step)

    def total(self) -> float:
        return sum(seconds for _, seconds in self.calls)


class RawHttp:
    """A minimal HTTP/1.1 keep-alive GET client over asyncio streams, for the floor and baseline.

    About 0.1 ms of client CPU per query on this machine, against ~1 ms (and ~2 ms of latency)
    for httpx: neither the floor nor the per-deployment baseline is slowed by a client library.
    No gzip (not asked for), Content-Length or chunked bodies, one request at a time.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> bytes:
        """The body of `GET path`; RuntimeError unless the status is 200."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            body = b"".join(chunks)
        if head[0].split()[1] != "200":
            raise RuntimeError(f"GET {path}: {head[0]}: {body[:300]!r}")
        return body

    async def query(self, expr: str) -> bytes:
        """The raw JSON answer of an instant query `expr` evaluated now."""
        return await self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


STEADY_INTERVAL = 15.0  # SEXTANT_ALERTS_INTERVAL's default: the steady rounds' spacing


def catalogue_query(rule: AlertRule) -> str:
    """The catalogue's own query for a rule's vector: the measure, or the whole expression."""
    if rule.scope is Scope.FLEET:
        return rule.expr
    return rule.measure or rule.expr


def sextant_query(rule: AlertRule) -> str | None:
    """What Sextant's evaluator sends for a rule in a steady round (None: nothing of its own).

    Heartbeat rules: the increases since the previous round (app/alerting/heartbeat.py); the
    fleet rule counting heartbeat silences is answered from the scheduler heartbeat's values.
    """
    if rule.scope is Scope.FLEET:
        return None if heartbeat_count(rule.expr) else rule.expr
    counter = heartbeat_counter(rule.measure) if rule.measure else None
    if counter is not None:
        return increases_query(counter, STEADY_INTERVAL + MARGIN)
    return rule.measure or rule.expr


def evaluator_queries(rules: Sequence[AlertRule]) -> int:
    """How many queries one evaluation round sends: one per rule, one per heartbeat counter."""
    return len({sextant_query(rule) for rule in rules if sextant_query(rule) is not None})


def met_by_values(rule: AlertRule, values: dict[str, float]) -> set[str]:
    """Deployments over the rule's default threshold, from per-deployment values."""
    assert rule.threshold is not None
    return {name for name, value in values.items() if rule.threshold.holds(value)}


def condition_met(rule: AlertRule, samples: Sequence[Sample]) -> set[str]:
    """Deployments whose condition holds by the fleet-wide answer (default thresholds)."""
    if rule.scope is Scope.FLEET:
        return {"fleet"} if samples else set()
    lower = rule.threshold is not None and rule.threshold.op in ("<", "<=")
    values = per_deployment(samples, lower_is_worse=lower).values
    if rule.threshold is None:
        return set(values)
    return met_by_values(rule, dict(values))


@dataclass
class RuleTiming:
    rule: AlertRule
    series: int = 0
    catalogue: list[float] = field(default_factory=list)  # bare, the catalogue's own query
    bare: list[float] = field(default_factory=list)  # bare, exactly what Sextant sends
    sextant: list[float] = field(default_factory=list)
    per_deployment: float = 0.0  # seconds, the sequential pass's queries of this rule
    per_deployment_queries: int = 0


@dataclass
class Round:
    name: str
    wall: float
    query: float
    queries: int
    prometheus_cpu: float


@dataclass
class PerDeploymentPass:
    name: str
    queries: int
    wall: float
    prometheus_cpu: float
    client_cpu: float
    found: dict[str, set[str]]
    per_rule: dict[str, float]


async def timed_bare(client: RawHttp, expr: str) -> float:
    """Seconds for one bare query of `expr`, body read and discarded."""
    started = time.perf_counter()
    await client.query(expr)
    return time.perf_counter() - started


async def per_deployment_pass(
    name: str,
    prometheus: PrometheusServer,
    rules: Sequence[AlertRule],
    deployments: Sequence[str],
    concurrency: int,
) -> PerDeploymentPass:
    """Every (rule, deployment) query; a deployment is found when its answer is non-empty.

    `concurrency` workers, each with its own kept-alive connection, take queries from one list.
    """
    work: list[tuple[AlertRule, str, str]] = []
    for rule in rules:
        if rule.scope is Scope.FLEET:
            work.append((rule, "fleet", rule.expr))
        else:
            work += [(rule, d, inject_deployment(rule.expr, d)) for d in deployments]
    found: dict[str, set[str]] = {rule.name: set() for rule in rules}
    per_rule: dict[str, float] = {rule.name: 0.0 for rule in rules}
    pending = iter(work)
    clients = [RawHttp(prometheus.host, prometheus.port) for _ in range(concurrency)]

    async def worker(client: RawHttp) -> None:
        for rule, deployment, expr in pending:
            started = time.perf_counter()
            answer = json.loads(await client.query(expr))
            per_rule[rule.name] += time.perf_counter() - started
            if answer["data"]["result"]:
                found[rule.name].add(deployment)

    cpu, client_cpu = cpu_seconds(prometheus.process.pid), time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        for client in clients:
            client.close()
    wall = time.perf_counter() - started
    return PerDeploymentPass(
        name, len(work), wall, cpu_seconds(prometheus.process.pid) - cpu,
        time.process_time() - client_cpu, found, per_rule,
    )  # fmt: skip


async def rule_group_durations(
    prometheus: PrometheusServer, rules: Sequence[AlertRule], deployments: Sequence[str]
) -> dict[str, tuple[int, float]]:
    """Prometheus evaluating the catalogue (fleet-wide), then the per-deployment rules, itself.

    One set of groups at a time (so they never compete for the cores), every 10 s; each
    group's duration is read from `prometheus_rule_group_last_duration_seconds` after its first
    evaluation (the data is warm: the HTTP phases read it all). Returns (rules, seconds) per set.
    """
    home = prometheus.config_path.parent
    per_deployment_rules = [
        {"alert": rule.name, "expr": inject_deployment(rule.expr, deployment),
         "for": f"{int(rule.for_.total_seconds())}s", "labels": dict(rule.labels)}
        for rule in rules if rule.scope is Scope.DEPLOYMENT for deployment in deployments
    ]  # fmt: skip
    per_deployment_rules += [
        {"alert": r.name, "expr": r.expr, "for": f"{int(r.for_.total_seconds())}s"}
        for r in rules
        if r.scope is Scope.FLEET
    ]
    (home / "per-deployment.rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "per-deployment", "rules": per_deployment_rules}]})
    )
    catalogue_files = []
    for file_name, text in catalogue().files.items():
        (home / f"catalogue-{file_name}").write_text(text)
        catalogue_files.append(f"catalogue-{file_name}")
    results: dict[str, tuple[int, float]] = {}
    for label, files, count in (
        ("catalogue", catalogue_files, len(rules)),
        ("per-deployment", ["per-deployment.rules.yml"], len(per_deployment_rules)),
    ):
        prometheus.config_path.write_text(
            RULES_CONFIG + "rule_files:\n" + "".join(f"  - {name}\n" for name in files)
        )
        await asyncio.to_thread(prometheus.reload)
        seconds = await _first_evaluation(prometheus, _group_count(files, home))
        if seconds is None:
            print(f"  ({label} rule groups: not evaluated within the time limit)")
            continue
        results[label] = (count, seconds)
    prometheus.config_path.write_text(PROMETHEUS_CONFIG)
    await asyncio.to_thread(prometheus.reload)
    return results


def _group_count(files: Sequence[str], home: Path) -> int:
    return sum(len(yaml.safe_load((home / f).read_text())["groups"]) for f in files)


async def _first_evaluation(prometheus: PrometheusServer, groups: int) -> float | None:
    """Total duration of every loaded group's first evaluation (None: not within 90 s)."""
    pattern = re.compile(
        r'^prometheus_rule_group_(last_duration_seconds|last_evaluation_timestamp_seconds)'
        r'\{rule_group="([^"]+)"\} (\S+)$', re.M,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    client = RawHttp(prometheus.host, prometheus.port)
    try:
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).decode()
            durations: dict[str, float] = {}
            stamps: dict[str, float] = {}
            for kind, group, value in pattern.findall(text):
                (durations if kind == "last_duration_seconds" else stamps)[group] = float(value)
            done = [group for group, stamp in stamps.items() if stamp > 0]
            if len(stamps) == groups and len(done) == groups:
                return sum(durations[group] for group in done)
            await asyncio.sleep(0.5)
    finally:
        client.close()
    return None


async def run(args: argparse.Namespace) -> int:
    load_all_models()
    rules = list(catalogue().rules)
    fleet = build_fleet(args.deployments, args.per_workspace)
    promtool = find_binary(
        "prometheus", "promtool", hint=f"apt-get install prometheus ({INSTALL_HINT})"
    )
    dirs = ComponentDirs.create()
    prometheus: PrometheusServer | None = None
    started_all = time.monotonic()
    try:
        # --- Prometheus with the backfilled fleet ------------------------------------------
        prometheus = await asyncio.to_thread(start_prometheus, dirs, PROMETHEUS_CONFIG)
        await asyncio.to_thread(prometheus.stop)
        source_file = dirs.make("backfill") / "fleet.om"
        t0 = time.perf_counter()
        write_fleet(fleet, source_file, int(time.time()), FUTURE)
        t1 = time.perf_counter()
        result = subprocess.run(
            [str(promtool), "tsdb", "create-blocks-from", "openmetrics", "-q", str(source_file),
             str(prometheus.data_dir)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"promtool failed: {result.stderr[-2000:]}")
        source_file.unlink()
        t2 = time.perf_counter()
        await asyncio.to_thread(prometheus.start)
        series = int(prometheus.query('count({__name__=~"airflow_.*|up"})')[0]["value"][1])
        print(
            f"alert_eval: {len(fleet.deployments)} deployments in "
            f"{len({w for w, _ in fleet.deployments})} workspaces, {series:,} series, "
            f"{fleet.lines:,} samples (written in {t1 - t0:.1f} s, promtool {t2 - t1:.1f} s); "
            f"{len(rules)} rules ({sum(r.scope is Scope.DEPLOYMENT for r in rules)} per deployment"
            f" + {sum(r.scope is Scope.FLEET for r in rules)} fleet); real Prometheus 2.42 "
            f"(pid {prometheus.process.pid}); Sextant on SQLite; load average {load_average()}",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as scratch:
            url = f"sqlite:///{Path(scratch) / 'bench.db'}"
            await asyncio.to_thread(upgrade, url)
            settings = Settings(
                _env_file=None,
                database=DatabaseSettings(url=url),
                scheduler=SchedulerSettings(enabled=False),
                prometheus=PrometheusSettings(url=prometheus.url, timeout=60),
                alerts=AlertsSettings(),
            )
            clock = FrozenClock(datetime.now(UTC))
            app = create_app(settings, clock, targets=[])
            async with app.router.lifespan_context(app):
                context = app.state.context
                await seed_fleet(context.sessionmaker, fleet.deployments, deployment_recipients=1)
                return await _measure(args, fleet, rules, prometheus, context, clock, started_all)
    finally:
        if prometheus is not None:
            prometheus.stop()
        dirs.remove()


async def _measure(
    args: argparse.Namespace,
    fleet: Fleet,
    rules: list[AlertRule],
    prometheus: PrometheusServer,
    context: AppContext,
    clock: FrozenClock,
    started_all: float,
) -> int:
    pid = prometheus.process.pid
    names = [name for _, name in fleet.deployments]
    source = metric_source_of(context)
    assert source is not None
    bare = RawHttp(prometheus.host, prometheus.port)
    # Warm-up: one of each, so that no timed query pays for a cold start on either side; the
    # heartbeat memories start as the evaluator's do, from the catalogue's measure.
    memories: dict[str, HeartbeatMemory] = {}
    for rule in rules:
        await bare.query(catalogue_query(rule))
        await source.instant(catalogue_query(rule))
        counter = heartbeat_counter(rule.measure) if rule.measure else None
        if counter is not None:
            memories[counter] = HeartbeatMemory()
            await silence(memories[counter], source, counter, datetime.now(UTC))
        if (query := sextant_query(rule)) is not None:
            await bare.query(query)
            await source.instant(query)

    # --- the floor against Sextant's query phase, rule by rule, alternating -------------------
    timings = {rule.name: RuleTiming(rule) for rule in rules}
    fleet_found: dict[str, set[str]] = {}
    all_at_once: list[float] = []
    heartbeat_values: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for timing in timings.values():
            rule = timing.rule
            timing.catalogue.append(await timed_bare(bare, catalogue_query(rule)))
            expr = sextant_query(rule)
            count = heartbeat_count(rule.expr) if rule.scope is Scope.FLEET else None
            counter = heartbeat_counter(rule.measure) if rule.measure else None
            if expr is not None:
                timing.bare.append(await timed_bare(bare, expr))
            started = time.perf_counter()
            if count is not None:
                over = [v for v in heartbeat_values[count.counter].values() if v > count.threshold]
                met = {"fleet"} if len(over) >= count.at_least else set()
            elif counter is not None:
                assert expr is not None
                samples = await source.instant(expr)
                values = memories[counter].advance(ages_per_deployment(samples), time.time())
                assert values is not None, "a deployment the memory does not know"
                heartbeat_values[counter] = values
                met = met_by_values(rule, values)
                timing.series = len(samples)
            else:
                assert expr is not None
                samples = await source.instant(expr)
                met = condition_met(rule, samples)
                timing.series = len(samples)
            timing.sextant.append(time.perf_counter() - started)
            fleet_found[rule.name] = met
        # Not what the evaluator does (it asks rule after rule): every query at once.
        queries = sorted({q for r in rules if (q := sextant_query(r)) is not None})
        started = time.perf_counter()
        await asyncio.gather(*(source.instant(q) for q in queries))
        all_at_once.append(time.perf_counter() - started)
    bare.close()

    # --- the real job: whole rounds -----------------------------------------------------------
    timed = TimedSource(source)
    context.extras[METRIC_SOURCE] = timed
    rounds: list[Round] = []

    async def job_round(name: str, advance: float) -> None:
        clock.advance(advance)
        timed.calls.clear()
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        await evaluate_alerts(context)
        wall = time.perf_counter() - started
        rounds.append(Round(name, wall, timed.total(), len(timed.calls), cpu_seconds(pid) - cpu))

    await job_round("first round (alerts become pending)", 0)
    await job_round("firing round (outbox written)", 16 * 60)  # past every rule's `for`
    for _ in range(args.repeat):
        await job_round("steady round", 15)
    context.extras[METRIC_SOURCE] = source
    async with session_scope(context.sessionmaker) as session:
        firing_rows = (
            await session.execute(
                select(Alert.rule, Deployment.name)
                .outerjoin(Deployment, Deployment.id == Alert.deployment_id)
                .where(Alert.status == "firing")
            )
        ).all()
        outbox = await session.scalar(select(func.count()).select_from(Notification))
    evaluator_firing: dict[str, set[str]] = {rule.name: set() for rule in rules}
    for rule_name, deployment in firing_rows:
        if rule_name in evaluator_firing:
            evaluator_firing[rule_name].add(deployment or "fleet")
    rounds_complete = all(r.queries == evaluator_queries(rules) for r in rounds)

    # --- one query per deployment ------------------------------------------------------------
    sequential = await per_deployment_pass("per-deployment, sequential", prometheus, rules,
                                           names, 1)  # fmt: skip
    concurrent = await per_deployment_pass(f"per-deployment, {CONCURRENCY} at a time",
                                           prometheus, rules, names, CONCURRENCY)  # fmt: skip
    for rule in rules:
        timings[rule.name].per_deployment = sequential.per_rule[rule.name]
        timings[rule.name].per_deployment_queries = 1 if rule.scope is Scope.FLEET else len(names)
    groups = await rule_group_durations(prometheus, rules, names) if args.rule_groups else {}

    _report(args, fleet, rules, timings, fleet_found, all_at_once, rounds, sequential,
            concurrent, evaluator_firing, outbox or 0, groups, rounds_complete,
            started_all)  # fmt: skip
    return 0


def _report(
    args: argparse.Namespace,
    fleet: Fleet,
    rules: list[AlertRule],
    timings: dict[str, RuleTiming],
    fleet_found: dict[str, set[str]],
    all_at_once: list[float],
    rounds: list[Round],
    sequential: PerDeploymentPass,
    concurrent: PerDeploymentPass,
    evaluator_firing: dict[str, set[str]],
    outbox: int,
    groups: dict[str, tuple[int, float]],
    rounds_complete: bool,
    started_all: float,
) -> None:
    expected = fleet.expected
    print("\n1. Correctness: deployments whose condition holds now, per rule")
    correct = rounds_complete
    rows: list[list[object]] = []
    for rule in rules:
        sets = (expected.get(rule.name, set()), fleet_found[rule.name],
                sequential.found[rule.name], concurrent.found[rule.name],
                evaluator_firing[rule.name])  # fmt: skip
        same = all(s == sets[0] for s in sets)
        correct &= same
        rows.append([rule.name, *(len(s) for s in sets[:3]), len(sets[4]),
                     "yes" if same else "NO"])  # fmt: skip
    print(table(["rule", "ground truth", "fleet-wide", "per-deployment", "evaluator firing",
                 "same deployments"], rows))  # fmt: skip
    print(f"  outbox after the firing round: {outbox} notifications (one recipient each)")

    print(
        f"\n2. Per rule, milliseconds (fleet-wide: median of {args.repeat}; per-deployment: "
        f"the sequential pass's {len(fleet.deployments)} queries of that rule, summed)"
    )
    rows = []
    for t in timings.values():
        c, s = median(t.catalogue), median(t.sextant)
        b = median(t.bare) if t.bare else None
        rows.append([t.rule.name, t.series, c * 1e3, "shared" if b is None else b * 1e3, s * 1e3,
                     s / c, "-" if b is None else s / b, t.per_deployment * 1e3,
                     t.per_deployment / s])  # fmt: skip
    catalogue_total = sum(median(t.catalogue) for t in timings.values())
    bare_total = sum(median(t.bare) for t in timings.values() if t.bare)
    query_total = sum(median(t.sextant) for t in timings.values())
    rows.append(["all rules", sum(t.series for t in timings.values()), catalogue_total * 1e3,
                 bare_total * 1e3, query_total * 1e3, query_total / catalogue_total,
                 query_total / bare_total, sequential.wall * 1e3,
                 sequential.wall / query_total])  # fmt: skip
    print(table(["rule", "series", "bare, catalogue query", "bare, Sextant's query",
                 "Sextant query phase", "/ catalogue", "/ same query", "per-deployment",
                 "per-deployment / Sextant"], rows))  # fmt: skip
    print(
        "  (heartbeat rules: Sextant sends the increases since its previous round, 15 s + "
        f"{MARGIN:g} s, and keeps the rest; 'shared': answered from another rule's values)"
    )

    steady = [r for r in rounds if r.name == "steady round"]
    walls = [r.wall for r in steady]
    round_median = median(walls)
    print("\n3. Every rule for the whole fleet, seconds (ratio: this method's time / Sextant's "
          "steady round)")  # fmt: skip
    rows = [
        ["bare catalogue queries, one per rule (the floor)", len(rules), catalogue_total, "-",
         "-", catalogue_total / round_median],
        ["bare queries of what Sextant sends", evaluator_queries(rules), bare_total, "-", "-",
         bare_total / round_median],
        ["Sextant query phase (client + reduction)", len(rules), query_total, query_total, "-",
         query_total / round_median],
        ["  the same, all rules at once (not the evaluator)", len(rules), median(all_at_once),
         median(all_at_once), "-", median(all_at_once) / round_median],
    ]  # fmt: skip
    for r in rounds[:2]:
        rows.append([f"Sextant job, {r.name}", r.queries, r.wall, r.query, r.prometheus_cpu,
                     r.wall / round_median])  # fmt: skip
    sent = median([r.queries for r in steady])
    rows.append([f"Sextant job, steady round, median of {len(steady)}", sent, round_median,
                 median([r.query for r in steady]), median([r.prometheus_cpu for r in steady]),
                 1.0])  # fmt: skip
    rows.append([f"Sextant job, steady round, p95 of {len(steady)}", sent, p95(walls),
                 p95([r.query for r in steady]), p95([r.prometheus_cpu for r in steady]),
                 p95(walls) / round_median])  # fmt: skip
    for p in (sequential, concurrent):
        rows.append([p.name, p.queries, p.wall, p.wall, p.prometheus_cpu, p.wall / round_median])
    print(table(["method", "queries", "wall", "in Prometheus calls", "Prometheus CPU s",
                 "ratio"], rows))  # fmt: skip
    print(
        f"  (per-deployment client CPU: sequential {sequential.client_cpu:.2f} s, "
        f"{CONCURRENCY} at a time {concurrent.client_cpu:.2f} s)"
    )

    if "catalogue" in groups and "per-deployment" in groups:
        catalogue_rules, catalogue_seconds = groups["catalogue"]
        per_rules, per_seconds = groups["per-deployment"]
        print("\n4. Inside Prometheus (rule groups, no HTTP): first evaluation, seconds")
        print(table(["rule groups", "rules", "evaluation", "ratio"], [
            ["the catalogue as written (fleet-wide)", catalogue_rules, catalogue_seconds, 1.0],
            ["one rule per (rule, deployment)", per_rules, per_seconds,
             per_seconds / catalogue_seconds],
        ]))  # fmt: skip

    speedup = sequential.wall / round_median
    floor_ratio = query_total / catalogue_total
    print("\nTargets")
    print(
        f"  per-deployment (sequential) / Sextant steady round = {speedup:.1f}x "
        f"(target >= {TARGET_SPEEDUP:g}x): {verdict(speedup >= TARGET_SPEEDUP)}"
    )
    print(
        f"    (against Sextant's query phase alone {sequential.wall / query_total:.1f}x; "
        f"{CONCURRENCY} at a time against the steady round "
        f"{concurrent.wall / round_median:.1f}x)"
    )
    print(
        f"  Sextant query phase / bare catalogue queries of the same vectors = "
        f"{floor_ratio:.2f}x (target <= {TARGET_FLOOR_RATIO:g}x): "
        f"{verdict(floor_ratio <= TARGET_FLOOR_RATIO)}"
    )
    print(
        f"    (against bare queries of exactly what Sextant sends {query_total / bare_total:.2f}x;"
        f" Sextant steady round with SQLite / bare catalogue queries = "
        f"{round_median / catalogue_total:.2f}x)"
    )
    print(
        f"  same deployments found by both methods, the ground truth and the evaluator: "
        f"{verdict(correct)}"
    )
    print(f"  run time {time.monotonic() - started_all:.0f} s; load average {load_average()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--per-workspace", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument(
        "--no-rule-groups", dest="rule_groups", action="store_false",
        help="skip the comparison inside Prometheus (rule groups; about 1 min)",
    )  # fmt: skip
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
