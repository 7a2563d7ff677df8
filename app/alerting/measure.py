"""From one fleet-wide query result to one value per deployment.

Every rule is evaluated with one query for the whole fleet; the answer is a vector of series
labelled with `deployment`. This module decides, explicitly, what each shape of answer means:

- no series for a deployment: no value (the condition is not met; it is not an error);
- NaN or infinite samples: ignored, as if absent;
- several series for one deployment (per pool, per DAG): the worst one counts — the highest for
  `>`-style comparisons, the lowest for `<`-style ones;
- series without a `deployment` label: not attributable; ignored (and counted, for the log).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.integrations.prometheus import PrometheusClient, RangeSeries, Sample
from app.observability import promql


class MetricSource(Protocol):
    """Where rule expressions are evaluated (Prometheus' query API)."""

    async def instant(self, expr: str) -> Sequence[Sample]:
        """The instant vector of `expr` now; raises IntegrationError if it cannot be had."""
        ...

    async def range(
        self, expr: str, start: float, end: float, step: float
    ) -> Sequence[RangeSeries]:
        """The range of `expr` between two Unix times."""
        ...


@dataclass(frozen=True, slots=True)
class FleetValues:
    """The per-deployment values of one query, and how many series could not be attributed."""

    values: Mapping[str, float]
    unattributed: int = 0


def per_deployment(samples: Iterable[Sample], lower_is_worse: bool = False) -> FleetValues:
    """Reduce a fleet-wide vector to the worst finite value per deployment."""
    values: dict[str, float] = {}
    unattributed = 0
    for sample in samples:
        deployment = sample.labels.get("deployment")
        if not deployment:
            unattributed += 1
            continue
        if not math.isfinite(sample.value):
            continue
        current = values.get(deployment)
        if current is None:
            values[deployment] = sample.value
        elif lower_is_worse:
            values[deployment] = min(current, sample.value)
        else:
            values[deployment] = max(current, sample.value)
    return FleetValues(values, unattributed)


def for_deployment(expr: str, deployment: str) -> str:
    """`expr` with `deployment="<deployment>"` added to every series selector.

    The same expression restricted to one deployment's series, so that Prometheus reads only
    those (an `and on (deployment)` filter outside would evaluate the whole fleet first).
    Selectors are found with Sextant's own PromQL parser, so function names, `by (...)` lists
    and label values are never touched.
    """
    matcher = f'deployment="{deployment}"'
    text = expr
    for selector in sorted(promql.selectors(promql.parse(expr)), key=lambda s: -s.start):
        position = selector.start
        if selector.name is not None:
            position += len(selector.name)
        rest = text[position:]
        if rest.lstrip().startswith("{"):
            brace = position + (len(rest) - len(rest.lstrip()))
            text = f"{text[: brace + 1]}{matcher},{text[brace + 1 :]}"
        else:
            text = f"{text[:position]}{{{matcher}}}{text[position:]}"
    return text


def source_identity(source: MetricSource) -> str:
    """Which data `source` answers from (Prometheus' URL), for what is remembered about it."""
    return str(getattr(source, "identity", None) or f"source-{id(source)}")


def answers_any_promql(source: MetricSource) -> bool:
    """Whether `source` evaluates any PromQL over the raw series (Prometheus does).

    Sources that only know the catalogue's own queries (a test's fake) say nothing, and are
    asked exactly those.
    """
    return bool(getattr(source, "any_promql", False))


class PrometheusSource:
    """Prometheus' query API as the alerting MetricSource."""

    any_promql = True

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client
        self.identity = client.url

    async def instant(self, expr: str) -> Sequence[Sample]:
        """The instant vector of `expr` now."""
        return await self.client.query(expr)

    async def range(
        self, expr: str, start: float, end: float, step: float
    ) -> Sequence[RangeSeries]:
        """The range of `expr` between two Unix times."""
        return await self.client.query_range(expr, start, end, step)
