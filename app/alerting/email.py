"""Alert e-mails: subject, text and HTML parts, and the embedded chart.

    [FIRING] Scheduler heartbeat missing 312 s — etl-prod
    [RESOLVED] Scheduler heartbeat missing — etl-prod

The rule's own `summary` and `description` annotations (Prometheus template syntax, as the rule
files carry them) are rendered with the alert's labels and value, so an e-mail says what an
Alertmanager notification for the same rule would.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from app.integrations.smtp import PreparedMessage, serialize

_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value)\s*(?:\|\s*(\w+)\s*)?\}\}")


def humanize_duration(seconds: float) -> str:
    """`312` → `5m 12s`, as Prometheus' humanizeDuration."""
    if seconds < 1:
        return f"{seconds:.3g}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{secs}s"] if secs or not parts else []
    return " ".join(parts)


def format_value(value: float | None, unit: str | None) -> str:
    """A value as a reader wants it: seconds as `312 s`, ratios as percentages."""
    if value is None:
        return "no data"
    if unit == "seconds":
        return f"{value:.0f} s" if value >= 1 else f"{value:.2f} s"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    return f"{value:g}"


def render_template(text: str, labels: Mapping[str, str], value: float | None) -> str:
    """Render the Prometheus-template subset rule annotations use."""

    def substitute(match: re.Match[str]) -> str:
        label, function = match.group(2), match.group(3)
        if label is not None:
            return labels.get(label, "")
        if value is None:
            return "no data"
        if function == "humanizeDuration":
            return humanize_duration(value)
        if function == "humanizePercentage":
            return f"{value * 100:.1f}%"
        if function == "humanize":
            return f"{value:.4g}"
        return f"{value:g}"

    return _TEMPLATE.sub(substitute, text)


def title_of(rule: str) -> str:
    """`AirflowSchedulerHeartbeatMissing` → `Scheduler heartbeat missing`."""
    words = re.findall(r"[A-Z][a-z0-9]*", rule.removeprefix("Airflow")) or [rule]
    return " ".join([words[0], *(w.lower() for w in words[1:])])


@dataclass(frozen=True, slots=True)
class Notice:
    """Everything one alert e-mail says."""

    kind: str  # firing | repeat | resolved | test
    rule: str
    severity: str
    workspace: str | None
    deployment: str | None
    value: float | None
    threshold: float | None
    unit: str | None
    since: datetime | None
    resolved_at: datetime | None
    summary: str
    description: str
    dashboard_url: str | None
    runbook_url: str | None
    chart_png: bytes | None = None


def compose(notice: Notice, sender: str, to: str, message_id: str | None = None) -> EmailMessage:
    """The e-mail for a notice: plain text, HTML with the inline chart, fixed Message-ID."""
    message = _without_address(notice, sender)
    message["To"] = to
    message["Message-ID"] = message_id or make_msgid(domain="sextant")
    return message


@dataclass(frozen=True, slots=True)
class EventMail:
    """One notice's e-mail, composed and serialized once, then addressed to each recipient.

    Every recipient of an alert transition gets the same e-mail but for `To` and `Message-ID`;
    building the MIME tree (with its base64 chart) and flattening it is most of the cost of a
    message, so it is done once per event instead of once per recipient.
    """

    notice: Notice
    sender: str
    template: EmailMessage
    wire: bytes

    def addressed(self, to: str, message_id: str) -> EmailMessage:
        """The e-mail for one recipient, carrying the shared bytes with its own two headers."""
        head = f"To: {to}\r\nMessage-ID: {message_id}\r\n"
        if not (head.isascii() and _one_line(to) and _one_line(message_id)):
            return compose(self.notice, self.sender, to, message_id)
        message = PreparedMessage(parseaddr(self.sender)[1], to, head.encode() + self.wire)
        for name, value in self.template.raw_items():
            message.set_raw(name, value)  # as parsed once, in the template
        message["To"] = to
        message["Message-ID"] = message_id
        message.set_payload(self.template.get_payload())
        return message


def compose_once(notice: Notice, sender: str) -> EventMail:
    """The e-mail of a notice, ready to be addressed to each of its recipients."""
    template = _without_address(notice, sender)
    return EventMail(notice, sender, template, serialize(template))


def _one_line(text: str) -> bool:
    return "\r" not in text and "\n" not in text


def _without_address(notice: Notice, sender: str) -> EmailMessage:
    message = EmailMessage()
    status = (
        "RESOLVED" if notice.kind == "resolved" else "TEST" if notice.kind == "test" else ("FIRING")
    )
    subject = f"[{status}] {title_of(notice.rule)}"
    if notice.kind != "resolved" and notice.value is not None:
        subject += f" {format_value(notice.value, notice.unit)}"
    if notice.deployment:
        subject += f" — {notice.deployment}"
    message["Subject"] = subject
    message["From"] = sender
    if notice.since is not None:
        message["Date"] = format_datetime(notice.resolved_at or notice.since)
    message["X-Sextant-Rule"] = notice.rule
    if notice.deployment:
        message["X-Sextant-Deployment"] = notice.deployment
    facts = _facts(notice)
    message.set_content(_text(notice, facts))
    message.add_alternative(_html(notice, facts), subtype="html")
    if notice.chart_png is not None:
        html_part = message.get_body(("html",))
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(notice.chart_png, maintype="image", subtype="png", cid="<chart>",
                              filename="chart.png")  # fmt: skip
    return message


def _facts(notice: Notice) -> list[tuple[str, str]]:
    facts = [("Severity", notice.severity)]
    if notice.kind != "resolved":
        facts.append(("Value", format_value(notice.value, notice.unit)))
    if notice.threshold is not None:
        facts.append(("Threshold", format_value(notice.threshold, notice.unit)))
    if notice.since is not None:
        facts.append(("Firing since", notice.since.strftime("%Y-%m-%d %H:%M:%S UTC")))
    if notice.resolved_at is not None and notice.kind == "resolved":
        facts.append(("Resolved at", notice.resolved_at.strftime("%Y-%m-%d %H:%M:%S UTC")))
    if notice.workspace:
        facts.append(("Workspace", notice.workspace))
    if notice.deployment:
        facts.append(("Deployment", notice.deployment))
    return facts


def _text(notice: Notice, facts: list[tuple[str, str]]) -> str:
    lines = [notice.summary, "", notice.description, ""]
    lines += [f"{name}: {value}" for name, value in facts]
    if notice.dashboard_url:
        lines.append(f"Dashboard: {notice.dashboard_url}")
    if notice.runbook_url:
        lines.append(f"Runbook: {notice.runbook_url}")
    return "\n".join(lines) + "\n"


def _html(notice: Notice, facts: list[tuple[str, str]]) -> str:
    colour = "#2ca02c" if notice.kind == "resolved" else "#d62728"
    rows = "".join(
        f"<tr><th align='left'>{html.escape(n)}</th><td>{html.escape(v)}</td></tr>"
        for n, v in facts
    )
    links = []
    if notice.dashboard_url:
        links.append(f"<a href='{html.escape(notice.dashboard_url)}'>Dashboard</a>")
    if notice.runbook_url:
        links.append(f"<a href='{html.escape(notice.runbook_url)}'>Runbook</a>")
    chart = "<p><img src='cid:chart' alt='last hour' width='640'></p>" if notice.chart_png else ""
    return (
        f"<html><body><h2 style='color:{colour}'>{html.escape(notice.summary)}</h2>"
        f"<p>{html.escape(notice.description)}</p><table>{rows}</table>{chart}"
        f"<p>{' · '.join(links)}</p></body></html>"
    )
