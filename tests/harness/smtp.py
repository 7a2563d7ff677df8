"""The SMTP sink the alerting tests deliver to: a real aiosmtpd server in its own process."""

from __future__ import annotations

import email
import email.policy
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from tests.harness.components import HOST, Component, ComponentDirs
from tests.harness.process import ManagedProcess, free_port, tcp_accepts

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(kw_only=True)
class SmtpSink(Component):
    host: str
    port: int
    maildir: Path

    def messages(self) -> list[EmailMessage]:
        """Every message accepted so far, oldest first (one per recipient)."""
        files = sorted(p for p in self.maildir.iterdir() if p.suffix == ".eml")
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in files
        ]

    def sessions(self) -> int:
        """How many SMTP sessions (EHLO greetings) the sink has served."""
        log = self.maildir.parent / "sessions.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def clear(self) -> None:
        """Forget the messages received so far."""
        for path in self.maildir.glob("*.eml"):
            path.unlink()


def start_smtp_sink(dirs: ComponentDirs, delay: float = 0.0) -> SmtpSink:
    """Start the sink on a free port, with messages kept under its own folder.

    `delay`: seconds the sink takes to accept each message (a slow mail server).
    """
    home = dirs.make("smtp")
    maildir = home / "mail"
    maildir.mkdir()
    port = free_port()
    process = ManagedProcess(
        "smtp",
        [sys.executable, "-m", "tests.harness.smtp_sink", "--host", HOST, "--port", str(port),
         "--maildir", str(maildir), "--delay", str(delay)],
        log_path=home / "smtp.log",
        ready=tcp_accepts(port),
        cwd=REPO_ROOT,
    )  # fmt: skip
    process.start()
    return SmtpSink(process=process, host=HOST, port=port, maildir=maildir)
