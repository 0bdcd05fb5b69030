"""IDLE (RFC 2177): changes are pushed as they happen until the client says DONE."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from palais.gateway.imap.commands.registry import Reply, bad, command, ok
from palais.gateway.imap.framing import FramingError, read_line
from palais.gateway.imap.states import AUTHENTICATED_OR_SELECTED, Selected

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


@command("IDLE", states=AUTHENTICATED_OR_SELECTED)
async def idle(session: Session, tag: bytes) -> Reply:
    await session.continuation(b"idling")
    wake = asyncio.Event()
    state = session.state
    view = state.mailbox if isinstance(state, Selected) else None
    if view is not None:
        view.set_waker(wake.set)
        await session.send_updates(allow_expunge=True)
        await session.flush(force=True)
    reader = asyncio.ensure_future(read_line(session.reader, session.limits.max_line))
    waiter: asyncio.Task[bool] | None = None
    try:
        async with asyncio.timeout(session.idle_timeout):
            while not reader.done():
                current = asyncio.ensure_future(wake.wait())
                waiter = current
                await asyncio.wait([reader, current], return_when=asyncio.FIRST_COMPLETED)
                if current.done():
                    wake.clear()
                    await session.send_updates(allow_expunge=True)
                    await session.flush(force=True)
                else:
                    current.cancel()
    except TimeoutError:
        session.shutdown(b"Autologout; idle for too long")
        session.outcome = "timeout"
        return bad("Idle timeout")
    finally:
        if view is not None:
            view.set_waker(None)
        for task in (reader, waiter):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    try:
        line = reader.result()
    except FramingError as exc:
        return bad(exc.text)
    if line is None:
        session.shutdown(b"Connection closed")
        session.outcome = "eof"
        return bad("Connection closed while idling")
    if line.strip().upper() != b"DONE":
        return bad("Expected DONE")
    return ok("IDLE terminated")
