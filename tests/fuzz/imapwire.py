"""Helpers shared by the IMAP fuzz tests: run the framer, parse as the session does."""

from __future__ import annotations

import asyncio

from palais.gateway.imap.commands import REGISTRY
from palais.gateway.imap.framing import FramingError, Limits, RawCommand, read_command
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.session import _read_tag

# Ample for the harness's own inputs; the framing tests pass small ones.
WIDE = Limits()


def frame_all(
    data: bytes, limits: Limits = WIDE, *, stream_limit: int = 64
) -> tuple[list[RawCommand | FramingError], int]:
    """Every command (or framing refusal) in ``data``, and the "+" continuations asked.

    A small StreamReader limit sends long lines down the LimitOverrunError path.
    The whole read must end within seconds: the stream ends, so a framer that
    waits for more is hung.
    """

    async def go() -> tuple[list[RawCommand | FramingError], int]:
        reader = asyncio.StreamReader(limit=stream_limit)
        reader.feed_data(data)
        reader.feed_eof()
        asked = 0

        async def cont() -> None:
            nonlocal asked
            asked += 1

        out: list[RawCommand | FramingError] = []
        # Each round consumes at least one line or ends the stream.
        for _ in range(data.count(b"\n") + 2):
            try:
                raw = await read_command(reader, cont, limits)
            except FramingError as exc:
                out.append(exc)
                continue
            if raw is None:
                return out, asked
            out.append(raw)
        raise AssertionError("the framer keeps returning commands past the end of the stream")

    async def bounded() -> tuple[list[RawCommand | FramingError], int]:
        return await asyncio.wait_for(go(), timeout=5)

    return asyncio.run(bounded())


def parse_command(raw: RawCommand, *, utf8: bool = False) -> list[object] | None:
    """What ``Session.execute`` does before running a command: tag, name, arguments.

    Returns the parsed arguments, None for an unknown command; raises only
    ParseError (anything else would escape the session's error handling and
    drop the connection).
    """
    args = Args(raw, utf8=utf8)
    _read_tag(args)
    args.sp()
    name = args.keyword()
    if name == "UID":
        args.sp()
        name = "UID " + args.keyword()
    handler = REGISTRY.get(name)
    if handler is None:
        return None
    return handler.parse(args)


__all__ = ["WIDE", "Args", "ParseError", "frame_all", "parse_command"]
