"""A fake metric source for the alert evaluator: answers rule queries with values a test sets.

The real Prometheus path is tested separately (tests/integration/alerting/test_prometheus_*);
this fake lets a test walk an alert through time deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.integrations.errors import TransientError
from app.integrations.prometheus import RangePoint, RangeSeries, Sample
from app.observability.rules import catalogue


@dataclass
class FakeMetricSource:
    """Per rule, the value each deployment's measure has; `down` makes every query fail."""

    values: dict[str, dict[str, float]] = field(default_factory=dict)
    workspace: dict[str, str] = field(default_factory=dict)
    down: bool = False
    queries: list[str] = field(default_factory=list)

    def set(self, rule: str, deployment: str, value: float | None, workspace: str = "") -> None:
        """Make the rule's measure return `value` for the deployment (None: no series)."""
        per_deployment = self.values.setdefault(rule, {})
        if value is None:
            per_deployment.pop(deployment, None)
        else:
            per_deployment[deployment] = value
        if workspace:
            self.workspace[deployment] = workspace

    async def instant(self, expr: str) -> Sequence[Sample]:
        self.queries.append(expr)
        if self.down:
            raise TransientError("prometheus", "ConnectError contacting Prometheus")
        for rule in catalogue().rules:
            if expr in (rule.measure, rule.expr):
                return [
                    Sample({"deployment": d, "workspace": self.workspace.get(d, "")}, v)
                    for d, v in self.values.get(rule.name, {}).items()
                ]
        return []

    async def range(
        self, expr: str, start: float, end: float, step: float
    ) -> Sequence[RangeSeries]:
        if self.down:
            raise TransientError("prometheus", "ConnectError contacting Prometheus")
        points = tuple(
            RangePoint(start + i * step, float(i)) for i in range(int((end - start) // step))
        )
        return [RangeSeries({"deployment": "any"}, points)]
