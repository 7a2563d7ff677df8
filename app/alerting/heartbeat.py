"""Seconds since each deployment's heartbeat counter last increased, without re-reading 30 minutes.

The catalogue's heartbeat measure (alert_rules/airflow.rules.yml) is right for Prometheus, which
keeps no memory between evaluations: it looks back 30 minutes, in 10 s steps, for the last step at
which the counter rose, with two subqueries per series. Asked every round for 1,000 deployments
that is ~0.6 ms of Prometheus CPU per deployment and rule, 90% of an evaluation round, and its
10 s step puts the value off the truth by up to a step.

Between two of Sextant's rounds only the last few seconds are new. So Sextant asks the catalogue's
measure once (at start, for a deployment it has not seen, or after a gap it cannot bridge), keeps
when each deployment's counter last rose, and every round after that asks only for the increases
since its previous round, in 1 s steps:

    min by (workspace, deployment) (
      (time() - max_over_time(timestamp(C > C offset 1s)[<since last round + 10 s>:1s])
       or C * 0 + Inf)
      and C
    )

— how long ago the newest increase in that window was, or +Inf for a counter that is there but
did not rise. (Durations, not timestamps, so that Sextant's clock and Prometheus' need not
agree.) Semantics are the catalogue's: only counters scraped now have a value (`and C`); a reset
(restart of the exporter) is not an increase, the next heartbeat is; a counter never seen rising
is measured from when it was first seen; the value is capped at the 30-minute look-back, read "at
least". The memory is the evaluating process's own: a replica that takes the evaluator lease over
after others held it, or a round after Prometheus was unreachable for longer than the look-back,
starts again from the catalogue's measure, so nothing depends on it surviving a restart.

Only the catalogue's exact heartbeat measure is recognised (whitespace aside); a rule edited into
anything else is simply asked as written. The fleet rule that counts deployments over a heartbeat
threshold (`count(<heartbeat measure> > T) >= N`) is answered from the same values, so the
scheduler heartbeat costs one small query per round for both rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.alerting.measure import MetricSource, per_deployment
from app.integrations.prometheus import Sample

LOOKBACK = 1800.0
"""The catalogue measure's look-back (`[30m:10s]`): the largest value it can give."""

MARGIN = 10.0
"""Extra seconds each window reaches back, for samples ingested after the previous round ran."""

_METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_CATALOGUE_MEASURE = (
    "min by (workspace, deployment) ("
    "(time() - max_over_time(timestamp(C > C offset 10s)[30m:10s])"
    " or time() - min_over_time(timestamp(C)[30m:10s]))"
    " and C)"
)


def _pattern(template: str) -> re.Pattern[str]:
    compact = re.escape("".join(template.split()))
    first = compact.index("C")
    return re.compile(
        compact[:first]
        + f"(?P<counter>{_METRIC})"
        + compact[first + 1 :].replace("C", "(?P=counter)")
    )


_MEASURE = _pattern(_CATALOGUE_MEASURE)
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def heartbeat_counter(measure: str) -> str | None:
    """The counter whose silence `measure` measures, if it is the catalogue's heartbeat measure."""
    match = _MEASURE.fullmatch("".join(measure.split()))
    return match["counter"] if match else None


@dataclass(frozen=True, slots=True)
class HeartbeatCount:
    """A fleet rule `count(<heartbeat measure of counter> > threshold) >= at_least`."""

    counter: str
    threshold: float
    at_least: float


def heartbeat_count(expr: str) -> HeartbeatCount | None:
    """The fleet rule `expr` as a count over heartbeat values, if it has that shape."""
    compact = "".join(expr.split())
    match = re.fullmatch(rf"count\((?P<measure>.+)>(?P<t>{_NUMBER})\)>=(?P<n>{_NUMBER})", compact)
    if match is None:
        return None
    counter = heartbeat_counter(match["measure"])
    if counter is None:
        return None
    return HeartbeatCount(counter, float(match["t"]), float(match["n"]))


def catalogue_measure(counter: str) -> str:
    """The catalogue's heartbeat measure for `counter`, as Prometheus is asked it."""
    return _CATALOGUE_MEASURE.replace("C", counter)


def increases_query(counter: str, window: float) -> str:
    """Seconds since the newest increase of `counter` in the last `window` s, else +Inf."""
    seconds = math.ceil(window)
    return (
        f"min by (workspace, deployment) ((time() - max_over_time(timestamp({counter} > "
        f"{counter} offset 1s)[{seconds}s:1s]) or {counter} * 0 + Inf) and {counter})"
    )


@dataclass
class HeartbeatMemory:
    """When each deployment's counter last rose, as of this process's last round (Unix seconds)."""

    last_increase: dict[str, float] = field(default_factory=dict)
    last_round: float | None = None

    def window(self, now: float) -> float | None:
        """How far back this round must look, or None when only the full measure will do."""
        if self.last_round is None or now < self.last_round:
            return None
        window = now - self.last_round + MARGIN
        return window if window < LOOKBACK else None

    def seed(self, measured: Mapping[str, float], now: float) -> dict[str, float]:
        """Start from the catalogue measure's values (seconds since the last increase)."""
        self.last_increase = {name: now - value for name, value in measured.items()}
        self.last_round = now
        return {name: min(value, LOOKBACK) for name, value in measured.items()}

    def advance(self, ages: Mapping[str, float], now: float) -> dict[str, float] | None:
        """Apply one round's answer (seconds since the newest increase, +Inf: none).

        None when a deployment has a counter but nothing is remembered of it: then only the
        catalogue's measure knows how long it has been silent.
        """
        known: dict[str, float] = {}
        for name, age in ages.items():
            remembered = self.last_increase.get(name)
            if math.isfinite(age):
                at = now - age
                known[name] = at if remembered is None else max(at, remembered)
            elif remembered is not None:
                known[name] = remembered
            else:
                return None
        # Deployments whose counter is gone have no value now, as in the catalogue's measure;
        # one that comes back within the look-back is measured from what was remembered.
        self.last_increase.update(known)
        self.last_round = now
        return {name: min(now - at, LOOKBACK) for name, at in known.items()}


def ages_per_deployment(samples: Sequence[Sample]) -> dict[str, float]:
    """The increases query's answer as deployment → seconds since its newest increase (or +Inf)."""
    ages: dict[str, float] = {}
    for sample in samples:
        name = sample.labels.get("deployment")
        if name and not math.isnan(sample.value):
            ages[name] = min(sample.value, ages.get(name, math.inf))
    return ages


async def silence(
    memory: HeartbeatMemory, source: MetricSource, counter: str, now: datetime
) -> dict[str, float]:
    """Seconds since each deployment's `counter` last rose: the small query whenever it can."""
    at = now.timestamp()
    window = memory.window(at)
    if window is not None:
        answer = await source.instant(increases_query(counter, window))
        values = memory.advance(ages_per_deployment(answer), at)
        if values is not None:
            return values
    full = await source.instant(catalogue_measure(counter))
    return memory.seed(per_deployment(full).values, at)
