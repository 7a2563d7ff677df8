"""Log layout and task-log read benchmark: Sextant's per-deployment data streams against the
index-per-deployment-per-day layout read with Airflow's default `index_patterns = _all`.

(a) Shards, computed from the layouts for 200 deployments (nothing this size can be created on
    one 512 MB node: Elasticsearch allows 1,000 shards per node):
    - day layout (FluentD `logstash_format`, Astronomer's `fluentd.<release>.<date>`): one index
      per deployment per retained day, 1 primary each;
    - Sextant: one data stream per deployment, 1 primary per backing index, rolled over at the
      lifecycle's automatic age (7 d for a 15 d retention) and deleted whole once its newest line
      has expired. The number of backing indices is not a formula but the result of running the
      retention planner Sextant itself uses (`plan_retention`) hour by hour over eight weeks of
      steady logging: its mean and its maximum.
    The sample built for (b) is counted too (`_cat/shards`), to show the arithmetic holds.

(b) p95 latency of reading one 10,000-line task log (plus its end-of-log mark) from first line to
    the end mark, on a real Elasticsearch holding both layouts side by side:
    - Sextant's API (`sextant serve` on SQLite, a separate process), in pages of 10,000 (the
      API's maximum, and Elasticsearch's: the whole log in one page, then the page holding the
      mark) and of 1,000 (the API's default, Airflow's page size);
    - the floor: the same search requests straight to Elasticsearch on the deployment's data
      stream (what Sextant sends, without Sextant), with the same page sizes;
    - Airflow's reader (provider `es_task_handler`): per page a `count` then a `search` with
      `match_phrase` on `log_id`, offsets after the last one, sorted, 1,000 lines, on `_all`
      of a cluster holding the day layout (the provider's default), and, for reference, on the
      data stream (what Sextant's rendered Airflow configuration makes the Airflow UI do).
    The targets compare whole-log reads (the issue's floor is "a bare search"); the 1,000-line
    pages are printed too. The modes take turns within each repetition so that a noisy neighbour
    hurts them alike; every read is checked to return exactly the 10,000 lines.

Targets (issue 7): (a) >= 10x fewer shards; (b) Sextant >= 3x faster than `_all`, and <= 1.5x the
floor. Everything listens on 127.0.0.1; the run is bounded by `--deadline` seconds.

    uv run python -m bench.log_read [--deployments 200] [--days 3] [--repetitions 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from app.integrations.elasticsearch import BackingIndex
from app.logs.service import task_log_query
from app.observability.elasticsearch_target import (
    ElasticsearchTarget,
    log_data_stream,
    plan_retention,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WORKSPACE = "bench"
RUN_ID = "manual__2026-11-24T10:00:00.123456+00:00"
DAG_ID, TASK_ID = "etl", "load"
LOG_ID = f"{DAG_ID}-{TASK_ID}-{RUN_ID}--1-1"
END_OF_LOG = "end_of_log"
AIRFLOW_PAGE = 1000  # the provider's MAX_LINE_PER_PAGE
DAY_RETENTION = 30  # "200 deployments with 30 days of logs"
SEXTANT_RETENTION = 15  # the deployments' default log_retention_days

API_1000, API_10000 = "Sextant API, pages of 1000", "Sextant API, pages of 10000"
BARE_1000, BARE_10000 = "bare search on the stream, 1000", "bare search on the stream, 10000"
AIRFLOW_ALL, AIRFLOW_STREAM = "Airflow reader, _all (day layout)", "Airflow reader, the stream"

SHARD_TARGET = 10.0
ALL_TARGET = 3.0
FLOOR_TARGET = 1.5


class DeadlineExceeded(Exception):
    """The whole run took longer than --deadline."""


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise DeadlineExceeded("benchmark deadline exceeded")


# -- (a) shards -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackingCount:
    mean: float
    most: int


def sextant_backing_indices(retention_days: int, weeks: int = 8) -> BackingCount:
    """Backing indices of one steadily logging deployment under Sextant's retention passes,
    counted every hour of `weeks` after the first two retention periods."""
    keep = timedelta(days=retention_days)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    generation = 1
    indices = [BackingIndex(f".ds-x-{generation:06d}", start, 0, None, True)]
    counts: list[int] = []
    settle = 2 * retention_days * 24
    for hour in range(1, settle + weeks * 7 * 24 + 1):
        now = start + timedelta(hours=hour)
        # An hour of lines into the write index, then the hourly retention pass.
        write = indices[-1]
        indices[-1] = BackingIndex(write.name, write.created_at, write.documents + 1, now, True)
        plan = plan_retention(indices, now=now, keep=keep)
        if plan.rollover:
            generation += 1
            indices = [
                BackingIndex(i.name, i.created_at, i.documents, i.newest, False) for i in indices
            ]
            indices.append(BackingIndex(f".ds-x-{generation:06d}", now, 0, None, True))
        indices = [i for i in indices if i.name not in plan.delete]
        if hour > settle:  # steady state
            counts.append(len(indices))
    return BackingCount(statistics.fmean(counts), max(counts))


@dataclass
class Shards:
    rows: list[tuple[str, float, int]] = field(default_factory=list)
    ratio_mean: float = 0.0
    ratio_worst: float = 0.0


def shard_arithmetic(deployments: int) -> Shards:
    """Primary shards of both layouts for the fleet."""
    day = deployments * DAY_RETENTION
    sextant = sextant_backing_indices(SEXTANT_RETENTION)
    equal = sextant_backing_indices(DAY_RETENTION)
    shards = Shards()
    shards.rows = [
        (f"day indices, {DAY_RETENTION} d kept", day, day),
        (f"Sextant, {SEXTANT_RETENTION} d retention", deployments * sextant.mean,
         deployments * sextant.most),
        (f"Sextant, {DAY_RETENTION} d retention", deployments * equal.mean,
         deployments * equal.most),
        (f"day indices, {SEXTANT_RETENTION} d kept", deployments * SEXTANT_RETENTION,
         deployments * SEXTANT_RETENTION),
    ]  # fmt: skip
    shards.ratio_mean = day / (deployments * sextant.mean)
    shards.ratio_worst = day / (deployments * sextant.most)
    return shards


# -- the sample -------------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def task_documents(deployment: str, lines: int, start: datetime) -> list[dict[str, Any]]:
    """A 10,000-line try as Airflow 3's upload path prints it, through Sextant's shipper."""
    documents = []
    for offset in range(1, lines + 2):
        at = start + timedelta(microseconds=offset * 50)
        documents.append(
            {
                "timestamp": _iso(at),
                "@timestamp": _iso(at),
                "level": "info",
                "event": (
                    f"[{at:%H:%M:%S}] Processed batch {offset} of the extract: 500 rows, 0 rejected"
                    if offset <= lines
                    else END_OF_LOG
                ),
                "logger": "task.stdout",
                "chan": "stdout",
                "log_id": LOG_ID,
                "offset": offset,
                "component": "workers",
                "host": f"{deployment}-worker-0",
                "deployment": deployment,
                "workspace": WORKSPACE,
            }
        )
    return documents


def background_documents(deployment: str, count: int, day: datetime) -> list[dict[str, Any]]:
    """Other lines of a deployment on a day: component lines and short task logs."""
    documents = []
    for n in range(count):
        at = day + timedelta(minutes=37 * n)
        task = n % 2 == 0
        log_id = f"{DAG_ID}-t{n}-scheduled__{day:%Y-%m-%d}T00:00:00+00:00--1-1"
        documents.append(
            {
                "@timestamp": _iso(at),
                "timestamp": _iso(at),
                "level": "info",
                "event": f"Heartbeat {n}" if not task else f"task line {n}",
                "logger": "airflow.jobs.scheduler_job_runner" if not task else "task.stdout",
                "component": "scheduler" if not task else "workers",
                "host": f"{deployment}-0",
                "deployment": deployment,
                "workspace": WORKSPACE,
                "offset": n,
            }
            | ({"log_id": log_id} if task else {})
        )
    return documents


class Elastic:
    """Plain HTTP to Elasticsearch, for building the sample and the baselines."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=120)

    def bulk(self, operations: list[tuple[str, str, dict[str, Any]]]) -> None:
        """(op, index, document) triples in one bulk request."""
        lines = []
        for op, index, document in operations:
            lines += [json.dumps({op: {"_index": index}}), json.dumps(document)]
        response = self.http.post(
            "/_bulk", content="\n".join(lines) + "\n",
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
        response.raise_for_status()
        if response.json()["errors"]:
            raise RuntimeError(f"bulk refused documents: {response.text[:400]}")

    def shards(self, prefix: str) -> int:
        """Shards (primaries and replicas) of the indices whose names start with `prefix`."""
        rows = self.http.get("/_cat/shards", params={"format": "json", "h": "index"})
        rows.raise_for_status()
        return sum(1 for row in rows.json() if row["index"].startswith(prefix))


def day_index(deployment: str, day: datetime) -> str:
    """Astronomer's FluentD index name, `<prefix>.<release>.<YYYY.MM.DD>`."""
    return f"fluentd.{deployment}.{day:%Y.%m.%d}"


async def _apply_templates(url: str, names: Sequence[str]) -> None:
    """The deployments' index templates, through Sextant's own Elasticsearch target."""
    from app.core.settings import ElasticsearchSettings
    from app.provisioning.targets import DeploymentView

    target = ElasticsearchTarget(ElasticsearchSettings(url=url, timeout=60))
    semaphore = asyncio.Semaphore(8)

    async def apply(name: str) -> None:
        view = DeploymentView(name, WORKSPACE, "CeleryExecutor", "3.3.2", {}, 1)
        async with semaphore:
            await target.apply(view, target.render(view))

    try:
        await asyncio.gather(*(apply(n) for n in names))
    finally:
        await target.aclose()


def build_sample(
    es: Elastic, deployments: int, days: int, lines: int
) -> tuple[str, dict[str, int]]:
    """Both layouts for the fleet, the 10,000-line try in each; returns the deployment read."""
    names = [f"dep{n:03d}" for n in range(deployments)]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    asyncio.run(_apply_templates(es.url, names))
    # The day layout as FluentD's elasticsearch output creates it: dynamic mappings apart from
    # the nanosecond date (Astronomer's template), single node so no replica.
    es.http.put(
        "/_index_template/fluentd",
        json={
            "index_patterns": ["fluentd.*"],
            "priority": 150,
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {"@timestamp": {"type": "date_nanos"}}},
            },
        },
    ).raise_for_status()
    created = {"streams": 0, "day indices": 0}
    for start in range(0, deployments, 100):
        batch = names[start : start + 100]
        es.bulk(
            [
                ("create", log_data_stream(n), d)
                for n in batch
                for d in background_documents(n, 10, today)
            ]
        )
        created["streams"] += len(batch)
    for day_number in range(days):
        day = today - timedelta(days=day_number)
        for start in range(0, deployments, 100):
            batch = names[start : start + 100]
            es.bulk(
                [
                    ("index", day_index(n, day), d)
                    for n in batch
                    for d in background_documents(n, 10, day)
                ]
            )
            created["day indices"] += len(batch)
    target = names[0]
    documents = task_documents(target, lines, today + timedelta(hours=10))
    for start in range(0, len(documents), 5000):
        chunk = documents[start : start + 5000]
        es.bulk([("create", log_data_stream(target), d) for d in chunk])
        es.bulk([("index", day_index(target, today), d) for d in chunk])
    es.http.post("/_refresh", params={"expand_wildcards": "all"}).raise_for_status()
    return target, created


# -- the readers ------------------------------------------------------------------------------


def read_through_sextant(http: httpx.Client, deployment: str, page: int) -> int:
    """Page through Sextant's API until end_of_log; the number of lines read."""
    path = f"/api/v1/deployments/{deployment}/logs/tasks/{DAG_ID}/{RUN_ID}/{TASK_ID}"
    lines, after = 0, None
    while True:
        params: dict[str, Any] = {"limit": page} | ({"after": after} if after else {})
        response = http.get(path, params=params)
        response.raise_for_status()
        body = response.json()
        lines += len(body["lines"])
        after = body["next_after"]
        if body["end_of_log"]:
            return lines


def read_bare(es: httpx.Client, deployment: str, page: int) -> int:
    """Sextant's own search requests, sent straight to the deployment's data stream."""
    lines, after = 0, None
    path = f"/{log_data_stream(deployment)}/_search"
    params = {"filter_path": "hits.hits._source,hits.hits.sort", "ignore_unavailable": "true"}
    while True:
        response = es.post(path, params=params, json=task_log_query(LOG_ID, after, page))
        response.raise_for_status()
        hits = response.json()["hits"]["hits"]
        ended = bool(hits) and hits[-1]["_source"].get("event") == END_OF_LOG
        lines += len(hits) - (1 if ended else 0)
        if ended or not hits:
            return lines
        after = hits[-1]["sort"][0]


def read_like_airflow(es: httpx.Client, index: str) -> int:
    """The ES provider's reader: count, then search sorted by offset, page after page."""
    lines, offset = 0, 0
    while True:
        query = {
            "bool": {
                "filter": [{"range": {"offset": {"gt": offset}}}],
                "must": [{"match_phrase": {"log_id": LOG_ID}}],
            }
        }
        count = es.post(f"/{index}/_count", json={"query": query})
        count.raise_for_status()
        if count.json()["count"] == 0:
            return lines
        response = es.post(
            f"/{index}/_search",
            json={"query": query, "sort": ["offset"], "size": AIRFLOW_PAGE, "from": 0},
        )
        response.raise_for_status()
        hits = response.json()["hits"]["hits"]
        ended = hits[-1]["_source"].get("event") == END_OF_LOG
        lines += len(hits) - (1 if ended else 0)
        if ended:
            return lines
        offset = hits[-1]["_source"]["offset"]


# -- Sextant as a server ----------------------------------------------------------------------


def _child_env(workdir: Path, elasticsearch_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEXTANT_")}
    env.update(
        SEXTANT_DATABASE_URL=f"sqlite:///{workdir / 'sextant.db'}",
        SEXTANT_ELASTICSEARCH_URL=elasticsearch_url,
        SEXTANT_SCHEDULER_ENABLED="false",
        SEXTANT_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def _sextant(workdir: Path, env: dict[str, str], *args: str) -> str:
    exe = Path(sys.executable).parent / "sextant"
    run = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, cwd=workdir, timeout=60,
        check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"sextant {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run.stdout


@contextmanager
def sextant_server(workdir: Path, elasticsearch_url: str) -> Iterator[tuple[str, str]]:
    """`sextant serve` on a free port, migrated, with an administrator's token."""
    from tests.harness.process import ManagedProcess, free_port, http_ok

    env = _child_env(workdir, elasticsearch_url)
    _sextant(workdir, env, "db", "upgrade")
    token = _sextant(workdir, env, "tokens", "create", "--role", "system-admin").splitlines()[-1]
    port = free_port()
    exe = str(Path(sys.executable).parent / "sextant")
    process = ManagedProcess(
        "sextant", [exe, "serve", "--port", str(port)], log_path=workdir / "sextant.log",
        ready=http_ok(f"http://{HOST}:{port}/healthz"), env=env, cwd=workdir, start_timeout=30,
    )  # fmt: skip
    process.start()
    try:
        yield f"http://{HOST}:{port}", token
    finally:
        process.stop()


# -- the run ----------------------------------------------------------------------------------


def p95(samples: Sequence[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Mode:
    name: str
    read: Callable[[], int]
    # Read in every `every`-th repetition only: the slow baseline needs fewer samples to show
    # where it stands, and would otherwise take most of the time budget.
    every: int = 1
    seconds: list[float] = field(default_factory=list)


def measure(modes: list[Mode], repetitions: int, lines: int) -> None:
    """One warm-up read of each, then the repetitions, the modes taking turns."""
    for mode in modes:
        got = mode.read()
        if got != lines:
            raise RuntimeError(f"{mode.name} read {got} lines, not {lines}")
    for repetition in range(repetitions):
        shift = repetition % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            if repetition % mode.every:
                continue
            started = time.perf_counter()
            got = mode.read()
            mode.seconds.append(time.perf_counter() - started)
            if got != lines:
                raise RuntimeError(f"{mode.name} read {got} lines, not {lines}")


def run(options: argparse.Namespace) -> int:
    """Build the sample, measure, print the table; 0 when every target holds."""
    from tests.harness.components import ComponentDirs, start_elasticsearch

    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(options.deadline)
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    dirs = ComponentDirs.create()
    workdir = Path(tempfile.mkdtemp(prefix="sextant-bench-logs-"))
    server = None
    try:
        shards = shard_arithmetic(options.deployments)
        server = start_elasticsearch(dirs)
        es = Elastic(server.url)
        started = time.monotonic()
        deployment, created = build_sample(es, options.deployments, options.days, options.lines)
        built = time.monotonic() - started
        sample = {
            "Sextant streams": es.shards(".ds-airflow-logs-"),
            "day indices": es.shards("fluentd."),
        }
        with sextant_server(workdir, server.url) as (url, token):
            headers = {"Authorization": f"Bearer {token}"}
            with (
                httpx.Client(base_url=url, headers=headers, timeout=60) as api,
                httpx.Client(base_url=server.url, timeout=120) as bare,
            ):
                api.post("/api/v1/workspaces", json={"name": WORKSPACE}).raise_for_status()
                api.post(
                    f"/api/v1/workspaces/{WORKSPACE}/deployments", json={"name": deployment}
                ).raise_for_status()
                stream = log_data_stream(deployment)
                modes = [
                    Mode(API_10000, lambda: read_through_sextant(api, deployment, 10000)),
                    Mode(BARE_10000, lambda: read_bare(bare, deployment, 10000)),
                    Mode(API_1000, lambda: read_through_sextant(api, deployment, 1000)),
                    Mode(BARE_1000, lambda: read_bare(bare, deployment, 1000)),
                    # `_all` of a cluster holding the day layout alone: here the streams would
                    # be searched too, so the pattern names exactly the day indices.
                    Mode(AIRFLOW_ALL, lambda: read_like_airflow(bare, "fluentd.*"), every=3),
                    Mode(AIRFLOW_STREAM, lambda: read_like_airflow(bare, stream)),
                ]
                measure(modes, options.repetitions, options.lines)
        ok = report(options, shards, sample, created, modes, built, load_before, began)
        return 0 if ok else 1
    finally:
        signal.alarm(0)
        if server is not None:
            server.stop()
        dirs.remove()


def report(
    options: argparse.Namespace,
    shards: Shards,
    sample: dict[str, int],
    created: dict[str, int],
    modes: list[Mode],
    built: float,
    load_before: float,
    began: float,
) -> bool:
    print(
        f"\nlog layout and read benchmark: {options.deployments} deployments, "
        f"{options.lines} lines read, {options.repetitions} repetitions; load average "
        f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores"
    )
    print(f"\n(a) primary shards for {options.deployments} deployments (computed)")
    print(f"  {'layout':<34}{'mean':>10}{'worst':>10}")
    for name, mean, worst in shards.rows:
        print(f"  {name:<34}{mean:>10.0f}{worst:>10}")
    shards_ok = shards.ratio_worst >= SHARD_TARGET
    print(
        f"  day indices ({DAY_RETENTION} d) / Sextant ({SEXTANT_RETENTION} d): "
        f"{shards.ratio_mean:.1f}x mean, {shards.ratio_worst:.1f}x worst "
        f"(target >= {SHARD_TARGET:g}x)  {'PASS' if shards_ok else 'FAIL'}"
    )
    print(
        f"  sample on this node: {sample['Sextant streams']} stream shards "
        f"({created['streams']} streams, 1 backing index each so far), "
        f"{sample['day indices']} day-index shards ({created['day indices']} indices = "
        f"{options.deployments} x {options.days} days: what 512 MB and the 1,000-shard limit "
        f"allow next to the streams); built in {built:.0f} s"
    )
    print(f"\n(b) reading the {options.lines}-line task log to its end mark, seconds")
    print(f"  {'reader':<36}{'reads':>7}{'p50':>9}{'p95':>9}")
    for mode in modes:
        print(
            f"  {mode.name:<36}{len(mode.seconds):>7}"
            f"{statistics.median(mode.seconds):>9.3f}{p95(mode.seconds):>9.3f}"
        )
    by_name = {m.name: p95(m.seconds) for m in modes}
    everything = by_name[AIRFLOW_ALL]
    # The floor is "a bare search": the whole log in as few requests as Elasticsearch
    # allows (10,000 hits), so the targets compare whole-log reads on both sides.
    api, floor = by_name[API_10000], by_name[BARE_10000]
    faster, floor_ratio = everything / api, api / floor
    all_ok, floor_ok = faster >= ALL_TARGET, floor_ratio <= FLOOR_TARGET
    print(
        f"  _all (Airflow's default) p95 / Sextant API p95: {faster:.1f}x "
        f"(target >= {ALL_TARGET:g}x)  {'PASS' if all_ok else 'FAIL'}"
    )
    print(
        f"  Sextant API p95 / bare search p95, whole-log pages: {floor_ratio:.2f}x "
        f"(target <= {FLOOR_TARGET:g}x)  {'PASS' if floor_ok else 'FAIL'}"
    )
    api_1000, floor_1000 = by_name[API_1000], by_name[BARE_1000]
    print(
        f"  with pages of 1000 (11 requests): _all / Sextant {everything / api_1000:.1f}x, "
        f"Sextant / bare {api_1000 / floor_1000:.2f}x (each request pays for authentication "
        "and the deployment lookup before Elasticsearch is asked)"
    )
    print(f"\nwhole run {time.monotonic() - began:.0f} s (sample built in {built:.0f} s)")
    return shards_ok and all_ok and floor_ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument(
        "--days", type=int, default=3, help="day indices per deployment in the sample"
    )
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument(
        "--repetitions", type=int, default=40, help="reads per mode (the _all baseline: a third)"
    )
    parser.add_argument("--deadline", type=int, default=235, help="seconds for the whole run")
    options = parser.parse_args(argv)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
