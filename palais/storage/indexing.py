"""The substring index kept up to date by a process of its own.

Filing a message only lists it in ``text_pending`` (one small row, in the
filing's transaction); this process reads the listed messages' bytes,
writes their search documents into the index and takes them off the list
(``palais.storage.textindex.backfill``), a few at a time. Indexing a
message (decoding its parts, inserting its trigrams) costs more than
filing it: done in the writer thread, it would slow every submission; here
it runs on the other core. A search counts the messages still listed as
candidates, so a message is found from the moment it is filed, indexed or
not.

It gives way to filing: while messages arrive faster than ``_BURST`` a
second it waits for a lull (indexing takes a core's worth of work a
submission burst needs, and on SQLite its write lock), unless
the list has grown past ``_BACKLOG`` messages, the most a search should
have to read without the index. On SQLite its short transactions take the
database's write lock in turn with the gateway's writer (busy timeout: they
wait, never fail).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

log = logging.getLogger("palais.storage.indexing")

# Messages per transaction: small, so that the gateway's writer never waits
# long for SQLite's write lock.
_BATCH = 16
# Pause when nothing is listed or filings are arriving, and after a failure (seconds).
_IDLE = 0.2
_AFTER_FAILURE = 5.0
# Listed messages past which indexing no longer waits for a lull: a search
# reads at most about this many messages without the index (a few seconds),
# and a filing burst (a message and its receipt mail each) is not slowed
# by the indexer below it.
_BACKLOG = 50_000
# Messages listed per second (a filing and its receipt mails each count)
# above which filings are a burst the indexer gives way to.
_BURST = 40.0


def _newest(reader: Engine) -> int:
    """The newest listed message (a look-up in the list's key)."""
    with reader.connect() as conn:
        top = conn.exec_driver_sql("SELECT coalesce(max(message_id), 0) FROM text_pending").one()
    return int(top[0])


def _count(reader: Engine) -> int:
    """How many messages are listed (reads the whole list: only when new ones came)."""
    with reader.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM text_pending").one()[0])


class _Stop(Protocol):
    """What tells the indexing process to stop (an Event in tests)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Word:
    """The gateway's word to stop: its end of a pipe closed (or the gateway
    gone, which closes it too). Not a multiprocessing Event: setting one
    waits for every process waiting on it to wake, and one killed meanwhile
    (a SIGTERM to the whole process group, as systemd and Ctrl-C send) never
    does, so the gateway's stop hung for good."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def is_set(self) -> bool:
        return self._conn.poll(0)

    def wait(self, timeout: float | None = None) -> bool:
        return self._conn.poll(timeout)


def _child(url: str, blob_dir: str, word: Connection, idle: float, parent: int) -> None:
    _run(url, blob_dir, _Word(word), idle, parent)


def _run(url: str, blob_dir: str, stop: _Stop, idle: float, parent: int) -> None:
    # Imported here: the spawned process starts from a bare interpreter.
    from palais.mailbox.ports import MessageBytes
    from palais.storage.blobs import BlobStore
    from palais.storage.engine import is_sqlite, make_engine
    from palais.storage.textindex import backfill

    engine = make_engine(url, writer=True)
    reader = make_engine(url, writer=False)
    blobs: MessageBytes
    if is_sqlite(url):
        blobs = BlobStore(Path(blob_dir))
    else:
        from palais.storage.pg_blobs import PgBlobStore

        blobs = PgBlobStore(engine, reader, legacy=Path(blob_dir))
    # Looks at the newest listed message: (when, which), the oldest kept
    # being the newest look at least ``idle`` seconds old.
    looks: deque[tuple[float, int]] = deque()

    def arriving() -> bool:
        # Asked between every batch: the newest listed message alone (a key
        # look-up), the whole list counted only during a burst. A burst is
        # a rate, not any commit since the last look: between two commits
        # of a busy writer the indexer would otherwise see a lull, take the
        # write lock, and the writer's next commit would wait for it; at a
        # trickle of filings it indexes between them (the writer has time).
        now, top = time.monotonic(), _newest(reader)
        looks.append((now, top))
        while len(looks) > 2 and now - looks[1][0] >= idle:
            looks.popleft()
        since, first = looks[0]
        rate = (top - first) / max(now - since, idle)
        return rate > _BURST and _count(reader) < _BACKLOG

    def done() -> bool:
        # The gateway gone without a word (SIGKILL): so is its indexer.
        return stop.is_set() or os.getppid() != parent

    try:
        arriving()
        while not done():
            try:
                # Asked before each batch, the first included: during a burst
                # of filings nothing is indexed and the loop waits below (the
                # rate still shows the burst right after a backfill it stopped).
                indexed = backfill(
                    engine,
                    blobs,
                    reader=reader,
                    batch=_BATCH,
                    stop=lambda: done() or arriving(),
                )
            except Exception:
                log.exception("indexing failed; trying again shortly")
                stop.wait(_AFTER_FAILURE)
                continue
            if not indexed:
                stop.wait(idle)
    finally:
        blobs.close()
        reader.dispose()
        engine.dispose()


class IndexerProcess:
    """Starts, watches and stops the indexing process of one gateway."""

    def __init__(self, url: str, blob_dir: Path, *, idle: float = _IDLE) -> None:
        self._url = url
        self._blob_dir = blob_dir
        self._idle = idle
        # spawn: the gateway has threads (writer, fsync) a fork would copy mid-flight.
        self._context = multiprocessing.get_context("spawn")
        # The process waits on one end; closing the other tells it to stop.
        self._word, self._stop = self._context.Pipe(duplex=False)
        self._stopping = False
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        self._process = self._context.Process(
            target=_child,
            # The gateway's pid, known before this process may outlive it.
            args=(self._url, str(self._blob_dir), self._word, self._idle, os.getpid()),
            name="palais-indexer",
            daemon=True,
        )
        self._process.start()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def restart_if_dead(self) -> bool:
        """Start it again if it died (the gateway checks now and then); True if it was."""
        if self._process is None or self._process.is_alive() or self._stopping:
            return False
        log.warning(
            "the indexing process ended (exit %s); starting it again", self._process.exitcode
        )
        self.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._stop.close()  # never waits for the process, alive or not
        self._word.close()
        process, self._process = self._process, None
        if process is None:
            return
        process.join(timeout)
        if process.is_alive():  # stuck in a long statement: what it did is rolled back
            process.terminate()
            process.join(timeout)
