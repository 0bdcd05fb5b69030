"""A look at the store now and then, as a task of the gateway's event loop.

Departures, dossier purges, alerts and the court relay each look for work
that has come due, do it, and look again later. What they share is here:
the task, a failed look logged and tried again at the next (the database
away for a moment), and a stop that lets the work in hand finish, so that
its outcome is recorded and nothing is done twice after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["Periodic"]

log = logging.getLogger("palais.periodic")


class Periodic:
    """Calls ``look`` at start and then every ``interval`` seconds
    (at once again while it says more work is waiting), until ``stop``."""

    def __init__(self, name: str, interval: float) -> None:
        self.name = name  # the task's name, and what the log calls it
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop once the work in hand is done (or after ``timeout`` seconds,
        cancelled: what it did not record is done again later)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            log.warning("%s did not stop in %s s; cancelled", self.name, timeout)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(task, return_exceptions=True)

    async def starting(self) -> None:
        """Once, before the first look (a subclass's own recovery)."""

    async def look(self) -> bool:
        """One look; True if more work is waiting (no pause before the next)."""
        raise NotImplementedError

    async def _run(self) -> None:
        try:
            await self.starting()
        except Exception:
            log.exception("%s: could not start its work; looking anyway", self.name)
        while not self._stopping.is_set():
            more = False
            try:
                more = await self.look()
            except Exception:  # the database away for a moment: look again later
                log.exception("%s: a look failed; trying again", self.name)
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
