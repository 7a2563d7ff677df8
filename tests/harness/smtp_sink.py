"""A real SMTP server (aiosmtpd) that keeps every message it accepts as a file.

Run as its own process by the harness, so that tests can stop it (SMTP down), kill it, and start
it again on the same port. Recipients whose local part starts with `unknown` are refused with a
permanent 550, those starting with `busy` with a transient 451, as real mail servers do.
`--delay SECONDS` makes it slow: each message is accepted (written, then answered 250) only
after that long, as a loaded mail server would, so tests can catch a sender mid-batch.

    python -m tests.harness.smtp_sink --port PORT --maildir DIR [--delay SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    """Accepts mail into one file per message and recipient; refuses the marked addresses."""

    def __init__(self, maildir: Path, delay: float = 0.0) -> None:
        self.maildir = maildir
        self.delay = delay
        self.serial = itertools.count(1)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # One line per SMTP session, so tests can tell whether sessions are reused.
        with open(self.maildir.parent / "sessions.log", "a") as log:
            log.write(f"{hostname}\n")
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.split("@", 1)[0].lower()
        if local.startswith("unknown"):
            return f"550 5.1.1 <{address}>: user unknown"
        if local.startswith("busy"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        content = envelope.original_content or b""
        for recipient in envelope.rcpt_tos:
            name = f"{time.time_ns()}-{next(self.serial):06d}.eml"
            temporary = self.maildir / f".{name}.tmp"
            temporary.write_bytes(f"X-Envelope-To: {recipient}\r\n".encode() + content)
            os.replace(temporary, self.maildir / name)
        return "250 Message accepted"


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before accepting")
    args = parser.parse_args()
    args.maildir.mkdir(parents=True, exist_ok=True)
    controller = Controller(
        MaildirHandler(args.maildir, args.delay), hostname=args.host, port=args.port
    )
    controller.start()
    print(f"smtp sink listening on {args.host}:{args.port}", flush=True)
    loop = asyncio.new_event_loop()
    stop: asyncio.Future[Any] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(stop)
    controller.stop()


if __name__ == "__main__":
    main()
