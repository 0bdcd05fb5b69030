"""A minimal asyncio IMAP4rev1 client: enough for the benchmark, nothing more.

It speaks tagged commands, reads untagged responses with literals inlined,
authenticates with SASL EXTERNAL (SASL-IR when offered) or LOGIN, and can
IDLE while timestamping every ``* N EXISTS``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import time
from dataclasses import dataclass, field

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS", re.I)


class IMAPError(Exception):
    pass


def quote(name: str) -> str:
    """Quote a mailbox name, encoding it as modified UTF-7 (RFC 3501 5.1.3)."""
    return '"' + encode_mutf7(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_mutf7(text: str) -> str:
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            b64 = base64.b64encode("".join(buf).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            buf.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


@dataclass
class Response:
    status: str
    text: str
    untagged: list[bytes] = field(default_factory=list)


class IMAPConnection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.capabilities: set[str] = set()
        self._tag = 0
        self.idle_events: list[tuple[int, float]] = []
        self._idle_task: asyncio.Task[None] | None = None
        self._idle_tag: str | None = None
        self._idle_done: asyncio.Future[Response] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        timeout: float = 60.0,
    ) -> IMAPConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_hostname or host,
                ssl_handshake_timeout=timeout,
                limit=1 << 20,
            ),
            timeout,
        )
        conn = cls(reader, writer, timeout)
        async with asyncio.timeout(timeout):
            greeting = await conn._read_line()
        if not greeting.startswith(b"* OK") and not greeting.startswith(b"* PREAUTH"):
            writer.close()
            raise IMAPError(f"bad greeting {greeting[:200]!r}")
        m = re.search(rb"\[CAPABILITY ([^\]]*)\]", greeting, re.I)
        if m:
            conn.capabilities = {c.upper() for c in m.group(1).decode().split()}
        else:
            await conn.refresh_capabilities()
        return conn

    async def _read_line(self) -> bytes:
        """One logical response line with any literals inlined (callers bound the time)."""
        parts: list[bytes] = []
        while True:
            raw = await self.reader.readline()
            if not raw:
                raise ConnectionError("IMAP server closed the connection")
            m = _LITERAL.search(raw)
            if m:
                n = int(m.group(1))
                parts.append(raw)
                parts.append(await self.reader.readexactly(n))
                continue
            parts.append(raw.rstrip(b"\r\n"))
            return b"".join(parts)

    def _next_tag(self) -> str:
        self._tag += 1
        return f"B{self._tag:05d}"

    async def command(
        self, line: str, *, check: bool = True, timeout: float | None = None
    ) -> Response:
        tag = self._next_tag()
        self.writer.write(f"{tag} {line}\r\n".encode())
        return await self._collect(tag, line, check=check, timeout=timeout)

    async def _collect(
        self, tag: str, line: str, *, check: bool, timeout: float | None = None
    ) -> Response:
        # One timer for the whole response: asyncio.wait_for per line would cost
        # a task per line and make the client the bottleneck on 100k-line FETCHes.
        async with asyncio.timeout(timeout or self.timeout):
            return await self._collect_lines(tag, line, check=check)

    async def _collect_lines(self, tag: str, line: str, *, check: bool) -> Response:
        untagged: list[bytes] = []
        tagb = tag.encode() + b" "
        while True:
            resp = await self._read_line()
            if resp.startswith(tagb):
                rest = resp[len(tagb) :].decode("utf-8", "replace").strip()
                status, _, text = rest.partition(" ")
                status = status.upper()
                if check and status != "OK":
                    raise IMAPError(f"{line.split(' ', 1)[0]} failed: {status} {text}")
                m = re.search(r"\[CAPABILITY ([^\]]*)\]", text, re.I)
                if m:
                    self.capabilities = {c.upper() for c in m.group(1).split()}
                return Response(status, text, untagged)
            if resp.startswith(b"+"):
                raise IMAPError(f"unexpected continuation for {line[:40]!r}: {resp[:100]!r}")
            untagged.append(resp)
            if resp.upper().startswith(b"* CAPABILITY "):
                self.capabilities = {c.upper() for c in resp[13:].decode().split()}

    async def refresh_capabilities(self) -> None:
        await self.command("CAPABILITY")

    async def authenticate_external(self, authzid: str = "") -> None:
        ir = base64.b64encode(authzid.encode()).decode() if authzid else "="
        if "SASL-IR" in self.capabilities:
            await self.command(f"AUTHENTICATE EXTERNAL {ir}")
        else:
            tag = self._next_tag()
            self.writer.write(f"{tag} AUTHENTICATE EXTERNAL\r\n".encode())
            async with asyncio.timeout(self.timeout):
                cont = await self._read_line()
            if not cont.startswith(b"+"):
                raise IMAPError(f"AUTHENTICATE EXTERNAL: no continuation: {cont[:100]!r}")
            self.writer.write((ir if ir != "=" else "").encode() + b"\r\n")
            await self._collect(tag, "AUTHENTICATE", check=True)
        if (
            not any(c.startswith("IMAP4") for c in self.capabilities)
            or "IDLE" not in self.capabilities
        ):
            await self.refresh_capabilities()

    async def login(self, user: str, password: str) -> None:
        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        await self.command(f"LOGIN {q(user)} {q(password)}")
        await self.refresh_capabilities()

    async def select(
        self, mailbox: str, *, condstore: bool = False, examine: bool = False
    ) -> dict[str, int]:
        verb = "EXAMINE" if examine else "SELECT"
        suffix = " (CONDSTORE)" if condstore else ""
        resp = await self.command(f"{verb} {quote(mailbox)}{suffix}")
        info: dict[str, int] = {}
        for u in resp.untagged:
            m = _EXISTS.match(u)
            if m:
                info["exists"] = int(m.group(1))
            for key in (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"):
                m2 = re.search(rb"\[" + key + rb" (\d+)\]", u, re.I)
                if m2:
                    info[key.decode().lower()] = int(m2.group(1))
        return info

    async def status(self, mailbox: str, items: str = "MESSAGES") -> dict[str, int]:
        resp = await self.command(f"STATUS {quote(mailbox)} ({items})")
        out: dict[str, int] = {}
        for u in resp.untagged:
            if u.upper().startswith(b"* STATUS"):
                m = re.search(rb"\(([^()]*)\)\s*$", u)
                if m:
                    toks = m.group(1).split()
                    for k, v in zip(toks[::2], toks[1::2], strict=False):
                        out[k.decode().lower()] = int(v)
        return out

    # -- IDLE ---------------------------------------------------------------
    async def idle_start(self) -> None:
        """Enter IDLE; a background task timestamps every ``* N EXISTS``."""
        if "IDLE" not in self.capabilities:
            raise IMAPError("server does not advertise IDLE")
        tag = self._next_tag()
        self._idle_tag = tag
        self.writer.write(f"{tag} IDLE\r\n".encode())
        async with asyncio.timeout(self.timeout):
            while True:
                line = await self._read_line()
                if line.startswith(b"+"):
                    break
                self._note_untagged(line)
                if line.startswith(tag.encode() + b" "):
                    raise IMAPError(f"IDLE refused: {line[:200]!r}")
        loop = asyncio.get_running_loop()
        self._idle_done = loop.create_future()
        # mark any exception as retrieved: a session closed while idling is not an error here
        self._idle_done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._idle_task = asyncio.create_task(self._idle_reader(tag))

    def _note_untagged(self, line: bytes) -> None:
        m = _EXISTS.match(line)
        if m:
            self.idle_events.append((int(m.group(1)), time.monotonic()))

    async def _idle_reader(self, tag: str) -> None:
        tagb = tag.encode() + b" "
        untagged: list[bytes] = []
        assert self._idle_done is not None
        try:
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError("IMAP server closed the connection during IDLE")
                line = raw.rstrip(b"\r\n")
                if line.startswith(tagb):
                    rest = line[len(tagb) :].decode("utf-8", "replace")
                    status, _, text = rest.partition(" ")
                    self._idle_done.set_result(Response(status.upper(), text, untagged))
                    return
                self._note_untagged(line)
                untagged.append(line)
        except asyncio.CancelledError:
            if not self._idle_done.done():
                self._idle_done.cancel()
            raise
        except Exception as exc:
            if not self._idle_done.done():
                self._idle_done.set_exception(exc)

    async def idle_stop(self) -> Response:
        if self._idle_done is None:
            raise IMAPError("not idling")
        self.writer.write(b"DONE\r\n")
        try:
            return await asyncio.wait_for(asyncio.shield(self._idle_done), self.timeout)
        finally:
            self._idle_done = None
            self._idle_task = None

    async def logout(self) -> None:
        try:
            if self._idle_done is not None:
                await self.idle_stop()
            self.writer.write(f"{self._next_tag()} LOGOUT\r\n".encode())
            await asyncio.wait_for(self.writer.drain(), 2.0)
        except (TimeoutError, OSError, ConnectionError, ssl.SSLError, IMAPError):
            pass
        await self.close()

    async def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ConnectionError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
