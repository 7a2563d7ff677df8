"""A minimal SMTP server that keeps every message as a file, so the demo's e-mails can be read.

Just enough of RFC 5321 for a sending client such as aiosmtplib (EHLO/HELO, MAIL, RCPT, DATA
with dot-unstuffing, RSET, NOOP, QUIT), no TLS and no authentication: it listens on 127.0.0.1
only and accepts everything. Python 3.12 dropped `smtpd` and aiosmtpd is only a test
dependency, hence this small server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import itertools
import time
from collections.abc import Callable
from pathlib import Path

MAX_MESSAGE = 10 * 1024 * 1024


class SmtpSink:
    """Accept mail on 127.0.0.1:port into `maildir/<time>-<n>.eml`."""

    def __init__(self, maildir: Path, notify: Callable[[str], None] | None = None) -> None:
        self.maildir = maildir
        self.notify = notify
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._serial = itertools.count(1)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.maildir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._session, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        sender, recipients = "", list[str]()
        try:
            await reply("220 sextant-demo ESMTP sink")
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                command = raw.decode(errors="replace").strip()
                verb = command[:4].upper()
                if verb == "EHLO":
                    await reply("250-sextant-demo")
                    await reply(f"250 SIZE {MAX_MESSAGE}")
                elif verb == "HELO":
                    await reply("250 sextant-demo")
                elif verb == "MAIL":
                    sender, recipients = command.partition(":")[2].strip(), []
                    await reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(command.partition(":")[2].strip().strip("<>"))
                    await reply("250 OK")
                elif verb == "DATA":
                    await reply("354 end with <CRLF>.<CRLF>")
                    body = await self._read_data(reader)
                    self._keep(sender, recipients, body)
                    await reply("250 OK queued")
                elif verb == "RSET":
                    sender, recipients = "", []
                    await reply("250 OK")
                elif verb == "NOOP":
                    await reply("250 OK")
                elif verb == "QUIT":
                    await reply("221 bye")
                    return
                else:
                    await reply("502 command not implemented")
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        size = 0
        while True:
            line = await reader.readline()
            if not line or line in (b".\r\n", b".\n"):
                break
            if line.startswith(b".."):
                line = line[1:]
            size += len(line)
            if size <= MAX_MESSAGE:
                lines.append(line)
        return b"".join(lines)

    def _keep(self, sender: str, recipients: list[str], body: bytes) -> None:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._serial):04d}.eml"
        header = f"X-Envelope-From: {sender}\r\nX-Envelope-To: {', '.join(recipients)}\r\n"
        (self.maildir / name).write_bytes(header.encode() + body)
        if self.notify is not None:
            message = email.message_from_bytes(body, policy=email.policy.default)
            self.notify(f"e-mail to {', '.join(recipients)}: {message['Subject']} ({name})")
