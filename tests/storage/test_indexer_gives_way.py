"""The indexing process gives way to filing: during a burst of filings on
SQLite it indexes nothing (its transactions would make the gateway's writer
wait for the database's write lock in its busy handler's sleeps), and once
the burst is over it indexes everything that came."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from pathlib import Path

from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, open_storage
from palais.storage.indexing import _BATCH, _run
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, msg, setup_directory

IDLE = 0.2  # the indexer's pause between looks, as in the gateway
BACKLOG = 3000


def _listed(st: Storage, *, after: int = 0, upto: int | None = None) -> int:
    """Messages not indexed yet (indexing takes a message off the list),
    among those with ids in (after, upto]."""
    with st.reader.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM text_pending WHERE message_id > ? AND message_id <= ?",
            (after, 2**62 if upto is None else upto),
        ).scalar()
        return int(found or 0)


def _newest(st: Storage) -> int:
    with st.reader.connect() as conn:
        return int(conn.exec_driver_sql("SELECT max(id) FROM message").scalar() or 0)


def test_nothing_is_indexed_during_a_burst_and_everything_after(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    st = open_storage(url, tmp_path / "blobs")
    st.commits.run_now(setup_directory)
    st.start()
    stop = multiprocessing.get_context("spawn").Event()
    indexer = threading.Thread(
        target=_run, args=(url, str(tmp_path / "blobs"), stop, IDLE, os.getppid()), daemon=True
    )
    plan = FilingPlan(NUMBER, (Destination(GREFFE, BoxKind.RECUS),))
    numbered = 0  # every message of the test its own, across bursts
    # The backlog still listed when the burst's first message is filed
    # (from then on the indexer can see filings arriving).
    at_start: list[int] = []

    async def burst(seconds: float, at_least: int = 0, backlog: int = 0) -> int:
        """Files messages ten at a time for ``seconds`` (or ``at_least``)."""
        nonlocal numbered
        filed = 0
        end = time.monotonic() + seconds

        async def one() -> None:
            nonlocal filed, numbered
            while filed < at_least or time.monotonic() < end:
                data = msg(numbered, "audience de renvoi")
                numbered += 1
                filed += 1
                await st.mail.file(ME, data, summarize(data), plan)
                if backlog and not at_start:
                    at_start.append(_listed(st, upto=backlog))

        await asyncio.gather(*(one() for _ in range(10)))
        return filed

    try:
        # A backlog the indexer is working through when the burst begins.
        asyncio.run(burst(0.0, BACKLOG))
        backlog = _newest(st)
        indexer.start()
        deadline = time.monotonic() + 20
        while _listed(st) > BACKLOG - 2 * _BATCH and time.monotonic() < deadline:
            time.sleep(0.005)
        filed = asyncio.run(burst(1.5, backlog=backlog))
        assert filed > 150
        # Indexing a batch takes about a millisecond on a fast machine, and
        # the burst's first commit may wait that long for the lock: what is
        # judged is what the indexer did once filings were arriving, with
        # a backlog left to tempt it.
        assert at_start and at_start[0] > 4 * _BATCH, at_start
        # It stops within a few batches of the burst's start (the old
        # indexer went on through the burst, between the writer's commits)...
        assert _listed(st, upto=backlog) >= at_start[0] - 4 * _BATCH, at_start
        # ... and indexes none of the burst's messages meanwhile.
        assert _listed(st, after=backlog) == filed
        deadline = time.monotonic() + 30
        while _listed(st) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _listed(st) == 0
    finally:
        stop.set()
        indexer.join(10)
        st.close()
