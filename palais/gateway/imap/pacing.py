"""Long scans share the event loop: they give it back every few milliseconds.

Every listener (IMAP, SMTP, HTTPS) runs on one event loop, so a command that
walks thousands of messages without awaiting anything freezes every other
client for as long. The loops that can be long (FETCH, SEARCH over a box)
call ``Pacer.tick`` (or, in the hottest, ``due`` then ``pause``) once per
message: a clock read, and now and then one pass of the loop for everybody
else. Short commands (a page of envelopes)
end before their first slice is used up and never yield at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["SLICE", "Pacer"]

# How long a scan holds the loop at a time. A reply to another client waits
# for a few such slices (one per busy session per loop pass), well under 100 ms;
# a pass of the loop between slices costs some 20 µs.
SLICE = 0.002


class Pacer:
    __slots__ = ("_due", "gone", "slice")

    def __init__(
        self, slice_seconds: float = SLICE, *, gone: Callable[[], bool] | None = None
    ) -> None:
        self.slice = slice_seconds
        # Whether the client went away meanwhile: its scan then stops at the
        # next pause rather than run to the end for nobody.
        self.gone = gone
        self._due = time.perf_counter() + slice_seconds

    def due(self) -> bool:
        """Whether this scan has held the loop for a slice (no coroutine: for hot loops)."""
        return time.perf_counter() >= self._due

    async def pause(self) -> None:
        """Let the loop serve everybody else once, then start a new slice."""
        await asyncio.sleep(0)
        if self.gone is not None and self.gone():
            raise ConnectionAbortedError("the client went away")
        self._due = time.perf_counter() + self.slice

    async def tick(self) -> None:
        """Yield to the loop if this scan has held it for a slice."""
        if time.perf_counter() >= self._due:
            await self.pause()
