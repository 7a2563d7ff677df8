"""Pooled SMTP delivery against a real SMTP server: verdicts, reuse, outages."""

from __future__ import annotations

from email.message import EmailMessage

from app.core.settings import SmtpSettings
from app.integrations.smtp import Mailer, Verdict
from tests.harness.smtp import SmtpSink


def message(to: str, subject: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sextant@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("body")
    return msg


def mailer_for(sink: SmtpSink, concurrency: int = 4) -> Mailer:
    return Mailer(SmtpSettings(host=sink.host, port=sink.port), concurrency=concurrency)


async def test_each_message_gets_its_own_verdict(smtp_sink: SmtpSink) -> None:
    mailer = mailer_for(smtp_sink)
    verdicts = await mailer.send_many(
        [message("ops@example.com"), message("unknown-user@example.com"),
         message("busy@example.com"), message("dev@example.com")]
    )  # fmt: skip
    await mailer.close()

    assert [v.verdict for v in verdicts] == [
        Verdict.SENT, Verdict.FAILED, Verdict.RETRY, Verdict.SENT,
    ]  # fmt: skip
    assert "550" in verdicts[1].detail
    received = sorted(m["To"] for m in smtp_sink.messages())
    assert received == ["dev@example.com", "ops@example.com"]


async def test_sessions_are_reused_across_messages(smtp_sink: SmtpSink) -> None:
    mailer = mailer_for(smtp_sink, concurrency=2)
    verdicts = await mailer.send_many([message(f"user{i}@example.com") for i in range(40)])
    await mailer.close()

    assert all(v.verdict is Verdict.SENT for v in verdicts)
    assert len(smtp_sink.messages()) == 40
    assert 1 <= smtp_sink.sessions() <= 2


async def test_server_down_is_a_retry_and_delivery_resumes_when_it_returns(
    smtp_sink: SmtpSink,
) -> None:
    mailer = mailer_for(smtp_sink)
    assert (await mailer.send(message("a@example.com"))).verdict is Verdict.SENT
    smtp_sink.stop()

    down = await mailer.send(message("b@example.com"))
    smtp_sink.start()
    back = await mailer.send(message("c@example.com"))
    await mailer.close()

    assert down.verdict is Verdict.RETRY
    assert back.verdict is Verdict.SENT
    assert sorted(m["To"] for m in smtp_sink.messages()) == ["a@example.com", "c@example.com"]
