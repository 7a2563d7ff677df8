"""Alert e-mails: subject, rendered annotations, parts and the chart."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from app.alerting.chart import render_chart
from app.alerting.email import (
    Notice,
    compose,
    compose_once,
    humanize_duration,
    render_template,
    title_of,
)
from app.integrations.smtp import PreparedMessage, serialize

SINCE = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def notice(**changes: object) -> Notice:
    base: dict[str, object] = {
        "kind": "firing", "rule": "AirflowSchedulerLagHigh", "severity": "warning",
        "workspace": "data-eng", "deployment": "etl-prod", "value": 312.4, "threshold": 120.0,
        "unit": "seconds", "since": SINCE, "resolved_at": None, "summary": "Runs start late",
        "description": "Late by 5m 12s", "dashboard_url": "http://grafana/d/abc",
        "runbook_url": "http://runbooks/lag", "chart_png": None,
    }  # fmt: skip
    base.update(changes)
    return Notice(**base)  # type: ignore[arg-type]


def test_firing_subject_names_value_and_deployment() -> None:
    message = compose(notice(), "sextant@example.com", "ops@example.com", "<id@sextant>")
    assert message["Subject"] == "[FIRING] Scheduler lag high 312 s — etl-prod"
    assert message["Message-ID"] == "<id@sextant>"


def test_resolved_subject_has_no_value() -> None:
    message = compose(notice(kind="resolved", resolved_at=SINCE), "s@example.com", "o@example.com")
    assert message["Subject"] == "[RESOLVED] Scheduler lag high — etl-prod"


def test_parts_carry_the_facts_links_and_chart() -> None:
    png = render_chart([(0.0, 10.0), (60.0, 200.0), (120.0, 312.0)], 120.0, "s")
    message = compose(notice(chart_png=png), "s@example.com", "o@example.com")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html_body = message.get_body(("html",))
    assert "Threshold: 120 s" in text
    assert "Firing since: 2026-11-24 12:00:00 UTC" in text
    assert "Dashboard: http://grafana/d/abc" in text
    assert "cid:chart" in html_body.get_content()  # type: ignore[union-attr]
    images = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0].get_payload(decode=True)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "0.5s"), (59, "59s"), (312, "5m 12s"), (3600, "1h"),
                          (90061, "1d 1h 1m 1s")],
)  # fmt: skip
def test_humanize_duration(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text


def test_annotation_templates_render_labels_and_value() -> None:
    text = "{{ $labels.deployment }} late by {{ $value | humanizeDuration }} ({{ $value }})"
    assert render_template(text, {"deployment": "etl"}, 312) == "etl late by 5m 12s (312)"


def test_titles() -> None:
    assert title_of("AirflowDagImportErrors") == "Dag import errors"
    assert title_of("SextantMonitoringUnavailable") == "Sextant monitoring unavailable"


def parsed(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def headers(message: EmailMessage) -> list[tuple[str, str]]:
    return sorted((k, str(v)) for k, v in message.items() if k != "Content-Type")


def test_an_event_composed_once_and_addressed_is_the_message_composed_for_that_recipient() -> None:
    chart = render_chart([(0.0, 10.0), (60.0, 200.0)], 120.0)
    once = compose_once(notice(chart_png=chart), "Sextant <sextant@example.com>")
    for to, message_id in (("ops@example.com", "<a@sextant>"), ("dev@example.com", "<b@sx>")):
        addressed = once.addressed(to, message_id)
        assert isinstance(addressed, PreparedMessage)
        assert (addressed.envelope_sender, addressed.envelope_recipient) == (
            "sextant@example.com", to,
        )  # fmt: skip
        composed = compose(notice(chart_png=chart), "Sextant <sextant@example.com>", to, message_id)
        expected = parsed(serialize(composed))
        on_the_wire = parsed(addressed.wire)
        # The same headers (the MIME boundary is random in each composition).
        assert headers(on_the_wire) == headers(expected)
        assert on_the_wire.get_content_type() == expected.get_content_type()
        assert on_the_wire["To"] == to
        assert on_the_wire["Message-ID"] == message_id
        parts = [(p.get_content_type(), p.get_content()) for p in on_the_wire.walk()
                 if not p.is_multipart()]  # fmt: skip
        assert parts == [(p.get_content_type(), p.get_content()) for p in expected.walk()
                         if not p.is_multipart()]  # fmt: skip
        assert ("image/png", chart) in parts
        # The EmailMessage view says the same as the bytes.
        assert addressed["To"] == to
        assert addressed["Subject"] == expected["Subject"]


def test_an_address_that_does_not_fit_the_shared_bytes_gets_a_message_of_its_own() -> None:
    once = compose_once(notice(), "sextant@example.com")
    addressed = once.addressed("jörg@example.com", "<c@sextant>")
    assert not isinstance(addressed, PreparedMessage)
    assert addressed["To"] == "jörg@example.com"
