"""Fleet-wide rule evaluation: one query per rule for the whole fleet, then per deployment.

Each round: for every rule of the catalogue, ask Prometheus once (`by (deployment)` is in the
rule's measure), reduce the answer to one value per deployment, compare it with that deployment's
own threshold (catalogue default or override), step the alert's state machine, and hand alerts
that fire, keep firing or resolve to the notification pipeline — all in one transaction, so the
outbox holds exactly the notifications the new states call for.

If Prometheus cannot be asked, no state moves (nothing resolves because monitoring is down), and
after a grace period the fleet alert `SextantMonitoringUnavailable` goes to the system recipients.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerting import repository
from app.alerting.heartbeat import HeartbeatMemory, heartbeat_count, heartbeat_counter, silence
from app.alerting.measure import (
    MetricSource,
    answers_any_promql,
    per_deployment,
    source_identity,
)
from app.alerting.models import Alert, AlertEvent, AlertRuleOverride
from app.alerting.pipeline import Pipeline, Route, route, windows
from app.alerting.silences import silenced
from app.alerting.state import AlertState, AlertStatus, Observation, Transition, step
from app.core.settings import AlertsSettings
from app.deployments.models import Deployment
from app.integrations.errors import IntegrationError
from app.integrations.prometheus import Sample
from app.observability.rules import AlertRule, RuleCatalogue, RuleOverride, Scope, Severity
from app.recipients.models import AlertRecipient

logger = logging.getLogger(__name__)

MONITORING_RULE = "SextantMonitoringUnavailable"


@dataclass
class EvaluationReport:
    rules: int = 0
    failed_queries: list[str] = field(default_factory=list)
    transitions: int = 0
    queued: int = 0
    firing: int = 0


def to_override(row: AlertRuleOverride) -> RuleOverride:
    """A stored override as the catalogue's override type."""
    return RuleOverride(
        threshold=row.threshold,
        for_=timedelta(seconds=row.for_seconds) if row.for_seconds is not None else None,
        severity=Severity(row.severity) if row.severity else None,
        muted=row.muted,
    )


def _state(alert: Alert | None) -> AlertState:
    if alert is None:
        return AlertState()
    return AlertState(
        AlertStatus(alert.status), alert.active_since, alert.fired_at, alert.resolved_at,
        alert.value,
    )  # fmt: skip


@dataclass
class _Subject:
    """What an alert is about: a deployment, or the fleet (no deployment)."""

    deployment_id: int | None
    workspace_id: int | None
    labels: dict[str, str]
    routes: list[AlertRecipient] | None  # None: the system recipients


class AlertEvaluator:
    def __init__(self) -> None:
        self.heartbeats: dict[tuple[str, str], HeartbeatMemory] = {}

    async def evaluate(
        self,
        session: AsyncSession,
        source: MetricSource,
        catalogue: RuleCatalogue,
        now: datetime,
        settings: AlertsSettings,
        message_host: str,
    ) -> EvaluationReport:
        """One evaluation round for the whole fleet."""
        report = EvaluationReport()
        watched = await repository.watched_deployments(session)
        overrides = {(o.deployment_id, o.rule): o for o in await repository.overrides(session)}
        alerts = {(a.deployment_id, a.rule): a for a in await repository.alerts(session)}
        recipients = await self._recipients(session)
        touched: list[tuple[Alert, _Subject, AlertEvent | None]] = []
        # Heartbeat measures from the remembered last increases (app/alerting/heartbeat.py);
        # that needs the counters' own samples, which only Prometheus has.
        incremental = answers_any_promql(source)
        this_round: dict[str, dict[str, float]] = {}

        async def heartbeats(counter: str) -> dict[str, float]:
            if counter not in this_round:
                # Remembered per Prometheus: another one's counters are other data.
                key = (source_identity(source), counter)
                memory = self.heartbeats.setdefault(key, HeartbeatMemory())
                this_round[counter] = await silence(memory, source, counter, now)
            return this_round[counter]

        for rule in catalogue.rules:
            report.rules += 1
            lower = rule.threshold is not None and rule.threshold.op in ("<", "<=")
            counter = heartbeat_counter(rule.measure) if rule.measure else None
            count = heartbeat_count(rule.expr) if rule.scope is Scope.FLEET else None
            try:
                if count is not None and incremental:
                    over = [v for v in (await heartbeats(count.counter)).values()
                            if v > count.threshold]  # fmt: skip
                    answer: Sequence[Sample] = (
                        [Sample({}, float(len(over)))] if len(over) >= count.at_least else []
                    )
                elif rule.scope is Scope.FLEET:
                    # A fleet rule fires when its expression returns anything at all.
                    answer = await source.instant(rule.expr)
                elif counter is not None and incremental:
                    values: Mapping[str, float] = await heartbeats(counter)
                else:
                    samples = await source.instant(rule.measure or rule.expr)
                    values = per_deployment(samples, lower_is_worse=lower).values
            except IntegrationError as exc:
                report.failed_queries.append(f"{rule.name}: {exc}")
                continue
            if rule.scope is Scope.FLEET:
                met = bool(answer)
                value = answer[0].value if answer else None
                subject = _Subject(None, None, {"rule": rule.name, "severity": rule.severity},
                                   None)  # fmt: skip
                self._observe(alerts, touched, subject, rule.name, rule.severity, None,
                              Observation(met, value), rule.for_, now,
                              settings.interval)  # fmt: skip
                continue
            for deployment, workspace in watched:
                override = overrides.get((deployment.id, rule.name))
                effective = catalogue.effective(
                    rule.name, to_override(override) if override else None
                )
                value = values.get(deployment.name)
                if effective.muted:
                    observation = Observation(False, value)
                elif rule.threshold is not None:
                    met = value is not None and effective.breached(value)
                    observation = Observation(met, value)
                else:
                    observation = Observation(value is not None, value)
                subject = self._deployment_subject(deployment, workspace, rule, effective.severity,
                                                   recipients)  # fmt: skip
                self._observe(alerts, touched, subject, rule.name, effective.severity,
                              effective.threshold, observation, effective.for_, now,
                              settings.interval)  # fmt: skip

        monitoring_down = bool(report.failed_queries)
        if monitoring_down:
            logger.warning("prometheus unavailable", extra={"errors": report.failed_queries[:3]})
        subject = _Subject(None, None, {"rule": MONITORING_RULE, "severity": "critical"}, None)
        self._observe(
            alerts, touched, subject, MONITORING_RULE, Severity.CRITICAL, None,
            Observation(monitoring_down, float(len(report.failed_queries))),
            timedelta(seconds=settings.monitoring_grace), now, settings.interval,
        )  # fmt: skip

        for alert in alerts.values():
            if alert.id is None:
                session.add(alert)
        await session.flush()
        report.transitions = sum(1 for _, _, event in touched if event is not None)
        for alert, _, event in touched:
            if event is not None:
                event.alert_id = alert.id
                session.add(event)
        await session.flush()

        report.queued = await self._notify(session, touched, settings, message_host, now)
        report.firing = sum(1 for a in alerts.values() if a.status == AlertStatus.FIRING)
        return report

    @staticmethod
    def _deployment_subject(
        deployment: Deployment,
        workspace: str,
        rule: AlertRule,
        severity: str,
        recipients: Mapping[tuple[str, int], list[AlertRecipient]],
    ) -> _Subject:
        labels = {"workspace": workspace, "deployment": deployment.name, "rule": rule.name,
                  "severity": str(severity)}  # fmt: skip
        routed = recipients.get(("d", deployment.id), []) + recipients.get(
            ("w", deployment.workspace_id), []
        )
        return _Subject(deployment.id, deployment.workspace_id, labels, routed)

    @staticmethod
    def _observe(
        alerts: dict[tuple[int | None, str], Alert],
        touched: list[tuple[Alert, _Subject, AlertEvent | None]],
        subject: _Subject,
        rule: str,
        severity: str,
        threshold: float | None,
        observation: Observation,
        for_: timedelta,
        now: datetime,
        interval: float,
    ) -> None:
        key = (subject.deployment_id, rule)
        alert = alerts.get(key)
        state, transition = step(_state(alert), observation, now, for_.total_seconds(), interval)
        if alert is None:
            if state.status is AlertStatus.INACTIVE:
                return
            alert = Alert(deployment_id=subject.deployment_id, workspace_id=subject.workspace_id,
                          rule=rule, source="sextant")  # fmt: skip
            alerts[key] = alert
        alert.status, alert.severity = state.status.value, str(severity)
        alert.active_since, alert.fired_at = state.active_since, state.fired_at
        alert.resolved_at, alert.value = state.resolved_at, state.value
        alert.threshold, alert.last_evaluated_at = threshold, now
        event = None
        if transition is not None:
            alert.source = "sextant"
            event = AlertEvent(
                deployment_id=subject.deployment_id, rule=rule, kind=transition.value, at=now,
                episode=state.fired_at or now, value=state.value, threshold=threshold,
                severity=str(severity), source="sextant",
            )  # fmt: skip
        if state.status is AlertStatus.FIRING or transition is Transition.RESOLVED:
            touched.append((alert, subject, event))

    async def _recipients(
        self, session: AsyncSession
    ) -> Mapping[tuple[str, int], list[AlertRecipient]]:
        grouped: dict[tuple[str, int], list[AlertRecipient]] = defaultdict(list)
        for recipient in (await session.scalars(select(AlertRecipient))).all():
            if recipient.deployment_id is not None:
                grouped[("d", recipient.deployment_id)].append(recipient)
            else:
                grouped[("w", recipient.workspace_id)].append(recipient)
        return grouped

    async def _notify(
        self,
        session: AsyncSession,
        touched: Sequence[tuple[Alert, _Subject, AlertEvent | None]],
        settings: AlertsSettings,
        message_host: str,
        now: datetime,
    ) -> int:
        if not touched:
            return 0
        pipeline = Pipeline(timedelta(seconds=settings.repeat_interval), message_host)
        silence_windows = windows(await repository.active_silences(session, now))
        last = {
            (n.alert_id, n.email): n
            for n in await repository.last_notices(session, [a.id for a, _, _ in touched])
        }
        queued = 0
        for alert, subject, event in touched:
            if subject.routes is None:
                routes = [Route(email) for email in sorted(set(settings.system_recipients))]
            else:
                routes = route(subject.routes, alert.severity)
            if event is not None:
                event.silenced = silenced(subject.labels, silence_windows, now)
            queued += await pipeline.notify(
                session, alert, subject.labels, routes, silence_windows, last, now, event
            )
        return queued


evaluator = AlertEvaluator()
