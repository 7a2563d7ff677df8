"""Alerting for the API: current alerts and history, notification log, rule overrides,
silences, Alertmanager's webhook, test e-mails, and composing the e-mails the outbox sends."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerting import repository
from app.alerting.chart import render_chart
from app.alerting.email import EventMail, Notice, compose, compose_once, render_template
from app.alerting.evaluator import MONITORING_RULE, to_override
from app.alerting.measure import MetricSource, for_deployment
from app.alerting.models import Alert, AlertEvent, AlertRuleOverride, Notification, Silence
from app.alerting.pipeline import Pipeline, route, windows
from app.alerting.schemas import (
    AlertEventRead,
    AlertRead,
    NotificationRead,
    RuleOverrideUpdate,
    RuleRead,
    SilenceCreate,
    SilenceRead,
    SilenceUpdate,
    WebhookPayload,
    WebhookResult,
)
from app.alerting.silences import silenced
from app.audit.service import audit
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from app.core.pagination import Page, PageParams
from app.core.security import Action, Principal, Scope
from app.core.settings import Settings
from app.deployments.models import Deployment
from app.deployments.repository import get_by_name as deployment_by_name
from app.integrations.errors import IntegrationError
from app.integrations.smtp import Mailer, Verdict
from app.observability.dashboards import dashboard_uid
from app.observability.rules import (
    THRESHOLD_UNIT_ANNOTATION,
    CatalogueError,
    RuleCatalogue,
    validate_for,
    validate_threshold,
)
from app.recipients.models import AlertRecipient
from app.workspaces import repository as workspace_repository
from app.workspaces.models import Workspace

CHART_WINDOW = timedelta(hours=1)


def _status(silence: Silence, now: datetime) -> str:
    if now < silence.starts_at:
        return "pending"
    return "active" if now < silence.ends_at else "expired"


class AlertingService:
    # --- reading -------------------------------------------------------------------------

    async def alerts(
        self,
        session: AsyncSession,
        deployment: Deployment,
        workspace: str,
        now: datetime,
        status: str | None,
        rule: str | None,
    ) -> list[AlertRead]:
        """The deployment's alerts as they stand, each marked silenced or not."""
        rows = await repository.alerts_of(session, deployment.id, status, rule)
        silence_windows = windows(await repository.active_silences(session, now))
        return [
            AlertRead(
                rule=a.rule,
                status=a.status,
                silenced=a.status in ("firing", "pending")
                and silenced(
                    {
                        "workspace": workspace,
                        "deployment": deployment.name,
                        "rule": a.rule,
                        "severity": a.severity,
                    },
                    silence_windows,
                    now,
                ),
                severity=a.severity,
                value=a.value,
                threshold=a.threshold,
                active_since=a.active_since,
                fired_at=a.fired_at,
                resolved_at=a.resolved_at,
                last_evaluated_at=a.last_evaluated_at,
                source=a.source,
            )
            for a in rows
        ]

    async def history(
        self,
        session: AsyncSession,
        deployment: Deployment,
        page: PageParams,
        rule: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Page[AlertEventRead]:
        """The deployment's alert events, newest first."""
        rows, total = await repository.events_of(
            session, deployment.id, rule, since, until, page.limit, page.offset
        )
        return Page.of([AlertEventRead.model_validate(r) for r in rows], total, page)

    async def notifications(
        self, session: AsyncSession, deployment: Deployment, page: PageParams
    ) -> Page[NotificationRead]:
        """Who got what about this deployment, when, and how delivery went."""
        rows, total = await repository.notifications_of(
            session, deployment.id, page.limit, page.offset
        )
        return Page.of([NotificationRead.model_validate(r) for r in rows], total, page)

    # --- rule overrides --------------------------------------------------------------------

    async def rules(
        self, session: AsyncSession, deployment: Deployment, catalogue: RuleCatalogue
    ) -> list[RuleRead]:
        """Every catalogue rule as it applies to the deployment."""
        overrides = {o.rule: o for o in await repository.overrides_of(session, deployment.id)}
        result = []
        for rule in catalogue.rules:
            override = overrides.get(rule.name)
            effective = catalogue.effective(rule.name, to_override(override) if override else None)
            changed = []
            if override is not None:
                changed = [
                    name
                    for name, value in (
                        ("threshold", override.threshold),
                        ("for", override.for_seconds),
                        ("severity", override.severity),
                    )
                    if value is not None
                ]
                if override.muted:
                    changed.append("muted")
            result.append(
                RuleRead(
                    name=rule.name,
                    severity=effective.severity,
                    for_seconds=effective.for_.total_seconds(),
                    threshold=effective.threshold,
                    threshold_unit=rule.threshold.unit.value if rule.threshold else None,
                    muted=effective.muted,
                    overridden=changed,
                    expr=rule.expr,
                )
            )
        return result

    async def override(
        self,
        session: AsyncSession,
        principal: Principal,
        deployment: Deployment,
        catalogue: RuleCatalogue,
        rule_name: str,
        data: RuleOverrideUpdate,
    ) -> list[RuleRead]:
        """Set (or reset, with nulls) a deployment's override of one rule."""
        try:
            rule = catalogue.get(rule_name)
        except KeyError:
            raise NotFound(f"alert rule {rule_name!r} not found") from None
        fields = data.model_fields_set
        row = await session.scalar(
            select(AlertRuleOverride).where(
                AlertRuleOverride.deployment_id == deployment.id,
                AlertRuleOverride.rule == rule_name,
            )
        )
        before = None
        if row is None:
            row = AlertRuleOverride(deployment_id=deployment.id, rule=rule_name, muted=False)
            session.add(row)
        else:
            before = {
                "threshold": row.threshold,
                "for_seconds": row.for_seconds,
                "severity": row.severity,
                "muted": row.muted,
            }
        if "threshold" in fields:
            if data.threshold is None:
                row.threshold = None
            else:
                try:
                    row.threshold = validate_threshold(rule, data.threshold)
                except ValueError as exc:
                    raise InvalidInput.for_field("threshold", str(exc)) from None
        if "for_" in fields:
            if data.for_ is None:
                row.for_seconds = None
            else:
                try:
                    value = (
                        timedelta(seconds=float(data.for_))
                        if not isinstance(data.for_, str)
                        else validate_for(data.for_)
                    )
                    row.for_seconds = validate_for(value).total_seconds()
                except (ValueError, CatalogueError) as exc:
                    raise InvalidInput.for_field("for", str(exc)) from None
        if "severity" in fields:
            row.severity = data.severity
        if "muted" in fields and data.muted is not None:
            row.muted = data.muted
        await session.flush()
        audit.record(
            session,
            principal,
            action="alert-rule.override",
            resource_type="alert-rule",
            resource_id=f"{deployment.name}/{rule_name}",
            workspace_id=deployment.workspace_id,
            deployment_id=deployment.id,
            before=before,
            after={
                "threshold": row.threshold,
                "for_seconds": row.for_seconds,
                "severity": row.severity,
                "muted": row.muted,
            },
        )
        return await self.rules(session, deployment, catalogue)

    # --- silences -----------------------------------------------------------------------------

    async def _silence_scope(
        self, session: AsyncSession, principal: Principal, data: SilenceCreate
    ) -> int | None:
        """The workspace a new silence is confined to, checked against the caller's reach."""
        workspaces = {m.value for m in data.matchers if m.label == "workspace" and m.type == "="}
        deployments = {m.value for m in data.matchers if m.label == "deployment" and m.type == "="}
        workspace_id: int | None = None
        for name in deployments:
            found = await deployment_by_name(session, name)
            if found is None or not principal.can_see(found.workspace_id, found.id):
                raise NotFound(f"deployment {name!r} not found")
            principal.authorize(
                Action.DEPLOYMENT_UPDATE,
                workspace_id=found.workspace_id,
                deployment_id=found.id,
                not_found=f"deployment {name!r} not found",
            )
            workspace_id = found.workspace_id
        for name in workspaces:
            ws = await workspace_repository.get_by_name(session, name)
            if ws is None or not principal.can_see(ws.id):
                raise NotFound(f"workspace {name!r} not found")
            if workspace_id is not None and ws.id != workspace_id:
                raise InvalidInput.for_field("matchers", "deployment is not in that workspace")
            workspace_id = ws.id
        if workspace_id is None and principal.role.scope is not Scope.SYSTEM:
            raise Forbidden(
                "a silence must name a workspace or deployment (`=` matcher) "
                "within your reach; only system administrators silence everything"
            )
        if workspace_id is not None and principal.role.scope is Scope.WORKSPACE:
            principal.authorize(
                Action.DEPLOYMENT_UPDATE, workspace_id=workspace_id, not_found="workspace not found"
            )
        if (
            workspace_id is not None
            and principal.role.scope is Scope.DEPLOYMENT
            and not deployments
        ):
            raise Forbidden("a deployment token may only silence its own deployment")
        return workspace_id

    async def _silence_view(
        self, session: AsyncSession, silence: Silence, now: datetime
    ) -> SilenceRead:
        workspace = (
            await session.get(Workspace, silence.workspace_id)
            if silence.workspace_id is not None
            else None
        )
        return SilenceRead(
            id=silence.id,
            matchers=silence.matchers,
            starts_at=silence.starts_at,
            ends_at=silence.ends_at,
            status=_status(silence, now),
            created_by=silence.created_by,
            comment=silence.comment,
            workspace=workspace.name if workspace else None,
        )

    async def create_silence(
        self, session: AsyncSession, principal: Principal, data: SilenceCreate, now: datetime
    ) -> SilenceRead:
        """Hold back notifications matching the matchers between start and end."""
        starts = data.starts_at or now
        if starts.tzinfo is None or data.ends_at.tzinfo is None:
            raise InvalidInput.for_field("ends_at", "times need a time zone (e.g. a trailing Z)")
        if data.ends_at <= starts:
            raise InvalidInput.for_field("ends_at", "must be after starts_at")
        for matcher in data.matchers:
            if matcher.type in ("=~", "!~"):
                try:
                    re.compile(matcher.value)
                except re.error as exc:
                    raise InvalidInput.for_field("matchers", f"invalid regex: {exc}") from None
        workspace_id = await self._silence_scope(session, principal, data)
        silence = Silence(
            matchers=[m.model_dump(mode="json") for m in data.matchers],
            starts_at=starts,
            ends_at=data.ends_at,
            created_by=principal.name,
            comment=data.comment,
            workspace_id=workspace_id,
            created_at=now,
        )
        session.add(silence)
        await session.flush()
        audit.record(
            session,
            principal,
            action="silence.create",
            resource_type="silence",
            resource_id=str(silence.id),
            workspace_id=workspace_id,
            after={"matchers": silence.matchers, "ends_at": data.ends_at.isoformat()},
        )
        return await self._silence_view(session, silence, now)

    async def _visible_silence(
        self, session: AsyncSession, principal: Principal, silence_id: int
    ) -> Silence:
        silence = await session.get(Silence, silence_id)
        missing = f"silence {silence_id} not found"
        if silence is None:
            raise NotFound(missing)
        if principal.role.scope is not Scope.SYSTEM:
            if silence.workspace_id is None or not principal.can_see(silence.workspace_id):
                raise NotFound(missing)
        return silence

    async def list_silences(
        self, session: AsyncSession, principal: Principal, now: datetime, include_expired: bool
    ) -> list[SilenceRead]:
        """Silences visible to the caller, newest first."""
        query = select(Silence).order_by(Silence.id.desc())
        if principal.role.scope is not Scope.SYSTEM:
            query = query.where(Silence.workspace_id == principal.workspace_id)
        if not include_expired:
            query = query.where(Silence.ends_at > now)
        rows = (await session.scalars(query.limit(500))).all()
        return [await self._silence_view(session, s, now) for s in rows]

    async def get_silence(
        self, session: AsyncSession, principal: Principal, silence_id: int, now: datetime
    ) -> SilenceRead:
        """One silence."""
        return await self._silence_view(
            session, await self._visible_silence(session, principal, silence_id), now
        )

    async def update_silence(
        self,
        session: AsyncSession,
        principal: Principal,
        silence_id: int,
        data: SilenceUpdate,
        now: datetime,
    ) -> SilenceRead:
        """Extend, shorten or re-comment a silence."""
        silence = await self._visible_silence(session, principal, silence_id)
        self._may_change(principal, silence)
        if data.ends_at is not None:
            if data.ends_at <= silence.starts_at:
                raise InvalidInput.for_field("ends_at", "must be after starts_at")
            silence.ends_at = data.ends_at
        if data.comment is not None:
            silence.comment = data.comment
        await session.flush()
        audit.record(
            session,
            principal,
            action="silence.update",
            resource_type="silence",
            resource_id=str(silence.id),
            workspace_id=silence.workspace_id,
            after={"ends_at": silence.ends_at.isoformat(), "comment": silence.comment},
        )
        return await self._silence_view(session, silence, now)

    async def expire_silence(
        self, session: AsyncSession, principal: Principal, silence_id: int, now: datetime
    ) -> None:
        """End a silence now (it stays in the history as expired)."""
        silence = await self._visible_silence(session, principal, silence_id)
        self._may_change(principal, silence)
        if silence.ends_at > now:
            silence.ends_at = max(now, silence.starts_at + timedelta(microseconds=1))
        await session.flush()
        audit.record(
            session,
            principal,
            action="silence.expire",
            resource_type="silence",
            resource_id=str(silence.id),
            workspace_id=silence.workspace_id,
        )

    @staticmethod
    def _may_change(principal: Principal, silence: Silence) -> None:
        if principal.role.scope is Scope.SYSTEM:
            return
        if silence.workspace_id is None or not principal.may(Action.DEPLOYMENT_UPDATE):
            raise Forbidden(f"role {principal.role.value} may not change silences")

    # --- Alertmanager's webhook -----------------------------------------------------------

    async def ingest_webhook(
        self,
        session: AsyncSession,
        payload: WebhookPayload,
        now: datetime,
        settings: Settings,
        message_host: str,
    ) -> WebhookResult:
        """Feed Alertmanager's alerts into the same state and pipeline as Sextant's own."""
        accepted = ignored = 0
        touched: list[tuple[Alert, dict[str, str], AlertEvent, Deployment, str]] = []
        for item in payload.alerts:
            rule = item.labels.get("alertname")
            name = item.labels.get("deployment")
            deployment = await deployment_by_name(session, name) if name else None
            if not rule or deployment is None or deployment.status == "deleting":
                ignored += 1
                continue
            workspace = await workspace_repository.get(session, deployment.workspace_id)
            assert workspace is not None
            accepted += 1
            alert = await session.scalar(
                select(Alert).where(Alert.deployment_id == deployment.id, Alert.rule == rule)
            )
            severity = item.labels.get("severity", "warning")
            if item.status == "firing":
                if alert is not None and alert.status == "firing":
                    continue  # already known, from either source: delivered once
                if alert is None:
                    alert = Alert(
                        deployment_id=deployment.id,
                        workspace_id=deployment.workspace_id,
                        rule=rule,
                        severity=severity,
                    )
                    session.add(alert)
                fired = item.startsAt.astimezone(UTC)
                alert.status, alert.severity, alert.source = "firing", severity, "alertmanager"
                alert.active_since, alert.fired_at, alert.resolved_at = fired, fired, None
                alert.summary = item.annotations.get("summary", "")
                kind = "firing"
            else:
                if alert is None or alert.status != "firing":
                    continue
                alert.status, alert.resolved_at = "resolved", (item.endsAt or now).astimezone(UTC)
                kind = "resolved"
            alert.last_evaluated_at = now
            await session.flush()
            event = AlertEvent(
                alert_id=alert.id,
                deployment_id=deployment.id,
                rule=rule,
                kind=kind,
                at=now,
                episode=alert.fired_at or now,
                value=alert.value,
                threshold=alert.threshold,
                severity=alert.severity,
                source="alertmanager",
            )
            session.add(event)
            labels = {
                "workspace": workspace.name,
                "deployment": deployment.name,
                "rule": rule,
                "severity": alert.severity,
            }
            touched.append((alert, labels, event, deployment, workspace.name))
        await session.flush()
        if touched:
            pipeline = Pipeline(timedelta(seconds=settings.alerts.repeat_interval), message_host)
            silence_windows = windows(await repository.active_silences(session, now))
            last = {
                (n.alert_id, n.email): n
                for n in await repository.last_notices(session, [a.id for a, *_ in touched])
            }
            for alert, labels, event, deployment, _ in touched:
                event.silenced = silenced(labels, silence_windows, now)
                recipients = (
                    await session.scalars(
                        select(AlertRecipient).where(
                            (AlertRecipient.deployment_id == deployment.id)
                            | (
                                (AlertRecipient.workspace_id == deployment.workspace_id)
                                & AlertRecipient.deployment_id.is_(None)
                            )
                        )
                    )
                ).all()
                await pipeline.notify(
                    session,
                    alert,
                    labels,
                    route(recipients, alert.severity),
                    silence_windows,
                    last,
                    now,
                    event,
                )
        return WebhookResult(accepted=accepted, ignored=ignored)

    # --- e-mails ------------------------------------------------------------------------------

    async def compose_all(
        self,
        session: AsyncSession,
        notifications: Sequence[Notification],
        catalogue: RuleCatalogue,
        settings: Settings,
        source: MetricSource | None,
    ) -> dict[int, EmailMessage]:
        """The e-mail of each notification (one chart per event, shared by its recipients)."""
        messages: dict[int, EmailMessage] = {}
        mails: dict[int, EventMail] = {}
        for notification in notifications:
            if notification.event_id not in mails:
                notice = await self._notice(session, notification, catalogue, settings, source)
                mails[notification.event_id] = compose_once(notice, settings.smtp.sender)
            messages[notification.id] = mails[notification.event_id].addressed(
                notification.email, notification.message_id
            )
        return messages

    async def _notice(
        self,
        session: AsyncSession,
        notification: Notification,
        catalogue: RuleCatalogue,
        settings: Settings,
        source: MetricSource | None,
    ) -> Notice:
        event = await session.get(AlertEvent, notification.event_id)
        alert = await session.get(Alert, notification.alert_id)
        assert event is not None
        assert alert is not None
        deployment = (
            await session.get(Deployment, alert.deployment_id)
            if alert.deployment_id is not None
            else None
        )
        workspace = (
            await session.get(Workspace, deployment.workspace_id)
            if deployment is not None
            else None
        )
        labels = {
            "deployment": deployment.name if deployment else "",
            "workspace": workspace.name if workspace else "",
            "alertname": alert.rule,
        }
        try:
            rule = catalogue.get(alert.rule)
        except KeyError:
            rule = None
        annotations = dict(rule.annotations) if rule else {}
        if alert.rule == MONITORING_RULE:
            annotations = {
                "summary": "Sextant cannot reach Prometheus",
                "description": "Alert evaluation is suspended: no alert fires or resolves until "
                "Prometheus answers again.",
            }
        summary = render_template(
            annotations.get("summary", alert.summary or alert.rule), labels, event.value
        )
        description = render_template(annotations.get("description", ""), labels, event.value)
        runbook = annotations.get("runbook_url")
        if runbook and not runbook.startswith("http"):
            runbook = f"{settings.server.public_url.rstrip('/')}/docs/{runbook}"
        dashboard = None
        if settings.grafana.url and workspace is not None:
            dashboard = (
                f"{settings.grafana.url.rstrip('/')}/d/"
                f"{_dashboard_uid(workspace.name)}?var-deployment={labels['deployment']}"
            )
        chart = None
        if (
            source is not None
            and rule is not None
            and deployment is not None
            and event.kind != "test"
        ):
            chart = await _chart(
                source, rule.measure or rule.expr, deployment.name, event.threshold, event.at
            )
        unit = annotations.get(THRESHOLD_UNIT_ANNOTATION)
        return Notice(
            kind=event.kind if event.kind != "repeat" else "firing",
            rule=alert.rule,
            severity=event.severity,
            workspace=labels["workspace"] or None,
            deployment=labels["deployment"] or None,
            value=event.value,
            threshold=event.threshold,
            unit=unit,
            since=event.episode,
            resolved_at=alert.resolved_at if event.kind == "resolved" else None,
            summary=summary,
            description=description,
            dashboard_url=dashboard,
            runbook_url=runbook,
            chart_png=chart,
        )

    async def send_test(
        self,
        mailer: Mailer | None,
        recipient: AlertRecipient,
        deployment: Deployment,
        settings: Settings,
        now: datetime,
    ) -> None:
        """Send a test e-mail to one recipient now; 503 when SMTP is unavailable."""
        if mailer is None:
            raise Unavailable("SMTP is not configured (SEXTANT_SMTP_HOST)")
        notice = Notice(
            kind="test",
            rule="SextantTestNotification",
            severity="info",
            workspace=None,
            deployment=deployment.name,
            value=None,
            threshold=None,
            unit=None,
            since=now,
            resolved_at=None,
            summary=f"Test e-mail for {deployment.name}",
            description=f"{recipient.email} receives alerts of {deployment.name} with severity "
            f"{recipient.min_severity} or above.",
            dashboard_url=None,
            runbook_url=None,
        )
        delivery = await mailer.send(compose(notice, settings.smtp.sender, recipient.email))
        if delivery.verdict is Verdict.RETRY:
            raise Unavailable(f"SMTP unavailable: {delivery.detail}")
        if delivery.verdict is Verdict.FAILED:
            raise Conflict(f"the SMTP server refused {recipient.email}: {delivery.detail}")


def _dashboard_uid(workspace: str) -> str:
    return dashboard_uid(workspace, "deployment-overview")


async def _chart(
    source: MetricSource, measure: str, deployment: str, threshold: float | None, at: datetime
) -> bytes | None:
    # Only this deployment's series are read (not the fleet's, filtered afterwards).
    expr = for_deployment(measure, deployment)
    end = at.timestamp()
    try:
        series = await source.range(expr, end - CHART_WINDOW.total_seconds(), end, 60)
    except IntegrationError:
        return None
    points = [(p.timestamp, p.value) for s in series for p in s.points]
    return render_chart(sorted(points), threshold) if points else None


alerting = AlertingService()
