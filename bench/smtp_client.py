"""A minimal asyncio SMTP client for load generation.

Raw asyncio streams rather than smtplib: no threads, one event loop drives
dozens of connections, and the client overhead per message is a handful of
small writes and reads. No PIPELINING is used (each command waits for its
reply), so every server is measured with the same, lock-step dialogue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass


class SMTPReplyError(Exception):
    def __init__(self, stage: str, code: int, text: str) -> None:
        super().__init__(f"{stage}: {code} {text}")
        self.stage = stage
        self.code = code
        self.text = text


@dataclass
class Reply:
    code: int
    text: str


class SMTPConnection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: set[str] = set()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        implicit_tls: bool = True,
        server_hostname: str | None = None,
        helo: str = "bench.invalid",
        timeout: float = 30.0,
    ) -> SMTPConnection:
        """Connect, complete TLS (implicit or STARTTLS), read the greeting and EHLO."""
        if implicit_tls:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=server_hostname or host,
                    ssl_handshake_timeout=timeout,
                ),
                timeout,
            )
            conn = cls(reader, writer, timeout)
            async with asyncio.timeout(timeout):
                await conn._expect("greeting", 220)
                await conn._ehlo(helo)
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            conn = cls(reader, writer, timeout)
            async with asyncio.timeout(timeout):
                await conn._expect("greeting", 220)
                await conn._ehlo(helo)
                await conn._command("STARTTLS", 220)
                await writer.start_tls(ssl_context, server_hostname=server_hostname or host)
                await conn._ehlo(helo)
        return conn

    async def _read_reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = await self.reader.readline()
            if not raw:
                raise ConnectionError("SMTP server closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                try:
                    code = int(line[:3])
                except ValueError as exc:
                    raise ConnectionError(f"bad SMTP reply line {line!r}") from exc
                return Reply(code, "\n".join(lines))

    async def _expect(self, stage: str, code: int) -> Reply:
        reply = await self._read_reply()
        if reply.code != code:
            raise SMTPReplyError(stage, reply.code, reply.text)
        return reply

    async def _ehlo(self, helo: str) -> None:
        reply = await self._command(f"EHLO {helo}", 250)
        self.extensions = {ln.split(" ", 1)[0].upper() for ln in reply.text.split("\n")[1:]}

    async def command(self, line: str, code: int) -> Reply:
        async with asyncio.timeout(self.timeout):
            return await self._command(line, code)

    async def _command(self, line: str, code: int) -> Reply:
        self.writer.write(line.encode("ascii") + b"\r\n")
        return await self._expect(line.split(" ", 1)[0], code)

    async def send(self, mail_from: str, rcpts: list[str], payload: bytes) -> float:
        """Send one message. ``payload`` must be CRLF, dot-stuffed and end with CRLF.

        Returns the time in seconds from the end of DATA (the final ``.``)
        being written to the 250 reply being read.
        """
        async with asyncio.timeout(self.timeout):  # one timer per transaction
            await self._command(f"MAIL FROM:<{mail_from}>", 250)
            for rcpt in rcpts:
                await self._command(f"RCPT TO:<{rcpt}>", 250)
            await self._command("DATA", 354)
            self.writer.write(payload)
            self.writer.write(b".\r\n")
            t0 = time.monotonic()
            await self.writer.drain()
            await self._expect("end of DATA", 250)
            return time.monotonic() - t0

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            async with asyncio.timeout(min(self.timeout, 5.0)):
                await self._read_reply()
        except (TimeoutError, OSError, ConnectionError, ssl.SSLError):
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ConnectionError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
