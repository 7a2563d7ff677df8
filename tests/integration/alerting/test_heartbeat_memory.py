"""Heartbeat silence from remembered increases, against a real statsd_exporter and Prometheus.

The evaluator asks the catalogue's 30-minute heartbeat measure once, then each round only for the
increases since its previous round (app/alerting/heartbeat.py). Here a counter rises, stops and
rises again, scraped every second: after the first round every round uses the small query, and
its value follows the real silence to the scrape, where the catalogue's measure is off by up to
its 10 s step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from app.alerting.heartbeat import HeartbeatMemory, catalogue_measure, silence
from app.alerting.measure import PrometheusSource, per_deployment
from app.integrations.prometheus import PrometheusClient, RangeSeries, Sample
from tests.harness.components import PrometheusServer, StatsdExporter
from tests.integration.alerting._sextant import (
    HEARTBEAT_LINE,
    heartbeat_series,
    identity_prometheus_config,
    wait_until,
)

COUNTER = "airflow_scheduler_heartbeat"
DEPLOYMENT = "etl-prod"


class RecordingSource:
    """Prometheus' query API, remembering what was asked."""

    def __init__(self, source: PrometheusSource) -> None:
        self.source = source
        self.queries: list[str] = []

    async def instant(self, expr: str) -> Sequence[Sample]:
        self.queries.append(expr)
        return await self.source.instant(expr)

    async def range(
        self, expr: str, start: float, end: float, step: float
    ) -> Sequence[RangeSeries]:
        return await self.source.range(expr, start, end, step)


async def beat(exporter: StatsdExporter, seconds: float) -> float:
    """Heartbeats every 0.25 s for `seconds`; the wall time of the last one."""
    last = time.time()
    for _ in range(int(seconds / 0.25)):
        exporter.send(HEARTBEAT_LINE)
        last = time.time()
        await asyncio.sleep(0.25)
    return last


async def test_silence_follows_the_counter_with_the_small_query_after_the_first_round(
    statsd_exporter: StatsdExporter,
    prometheus_factory: Callable[..., PrometheusServer],
    tmp_path: Path,
) -> None:
    statsd_exporter.send(HEARTBEAT_LINE)
    prometheus = prometheus_factory(
        config=identity_prometheus_config(tmp_path, statsd_exporter, "data-eng", DEPLOYMENT)
    )
    wait_until(lambda: heartbeat_series(prometheus, DEPLOYMENT), 20, "the heartbeat scraped")
    source = RecordingSource(PrometheusSource(PrometheusClient(prometheus.url, timeout=5)))
    memory = HeartbeatMemory()

    # The catalogue's measure sees a series from the first 10 s step after its first scrape.
    await beat(statsd_exporter, 12)
    first = await silence(memory, source, COUNTER, datetime.now(UTC))
    assert source.queries == [catalogue_measure(COUNTER)]
    assert 0 <= first[DEPLOYMENT] <= 12

    stopped = await beat(statsd_exporter, 2)
    errors: list[float] = []
    for _ in range(8):
        await asyncio.sleep(1)
        values = await silence(memory, source, COUNTER, datetime.now(UTC))
        # The last increase Prometheus saw is the first scrape (every 1 s) that had the last
        # heartbeat: on a busy machine up to ~2 s after it was sent.
        errors.append(values[DEPLOYMENT] - (time.time() - stopped))
    assert all("offset 1s)[" in query for query in source.queries[1:]), source.queries
    assert all(-2.5 <= error <= 0.3 for error in errors), errors
    # Once that scrape is in, the value grows with the clock, second for second.
    assert max(errors[3:]) - min(errors[3:]) <= 0.5, errors
    silent = values[DEPLOYMENT]
    assert silent >= 6

    # The catalogue's own measure, asked now, agrees to within its 10 s step (either way: its
    # last step may be before the last increase, or see a later sample of the same value).
    full = per_deployment(await source.instant(catalogue_measure(COUNTER))).values[DEPLOYMENT]
    assert silent - 11 <= full <= silent + 11

    await beat(statsd_exporter, 2)
    await asyncio.sleep(1.5)
    again = await silence(memory, source, COUNTER, datetime.now(UTC))
    assert again[DEPLOYMENT] < 3
    assert "offset 1s)[" in source.queries[-1]
