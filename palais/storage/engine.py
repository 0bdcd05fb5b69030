"""Database engines: one for the single writer, one pool for readers."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc

# A pooled PostgreSQL connection unused for longer than this is tried
# (a round trip) before it is handed out: the server may have restarted.
_PING_AFTER_IDLE = 1.0

# A writer's connection forgets its plans at its 16th, 32nd, 64th... use,
# up to about a million (see _postgres_engine).
_REPLAN_FROM = 16
_REPLAN_UNTIL = 1 << 20


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, writer: bool) -> Engine:
    if not is_sqlite(url):
        return _postgres_engine(url, writer=writer)
    engine = create_engine(
        url,
        # The writer keeps its one connection open (opening one per batch
        # cost as much as the batch); readers pool theirs.
        pool_size=1 if writer else 5,
        # (the writer holds its connection between batches; a command or a
        # test writing beside it opens another)
        max_overflow=2 if writer else 10,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINT; take it over
        # (the recipe from SQLAlchemy's SQLite dialect documentation).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, which the 250 reply needs.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class WriteLock:
    """Several writers of one SQLite file, one at a time: the gateway's
    writer and its filing process (``palais.storage.filing_process``).

    SQLite makes a second writer poll (its busy handler sleeps 1, 2, 5, 10
    ms... between tries); a lock file held from before BEGIN to after the
    commit makes it wait in the kernel instead, woken when the first is done.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1  # opened at first use, again after close (a command's run_now)

    def __enter__(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        # The thread waits without the interpreter lock.
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_lock(url: str) -> WriteLock | None:
    """The lock file beside a SQLite database's file (none for PostgreSQL,
    whose transactions wait on its own row locks, nor in memory)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url or len(url) == len(prefix):
        return None
    return WriteLock(Path(url[len(prefix) :] + "-writer.lock"))


def _postgres_engine(url: str, *, writer: bool) -> Engine:
    engine = create_engine(
        url,
        pool_size=5 if writer else 10,
        # A statement run often is prepared once (psycopg). Readers plan
        # it at every run, with its parameters: a generic plan is made
        # once, and one made while a new database's tables were tiny
        # scanned whole tables until autovacuum analyzed them.
        # The writer lets PostgreSQL keep generic plans (plan_cache_mode
        # auto): the foreign keys' checks, about 25 a filed message, were
        # otherwise planned again at every row (an eighth of PostgreSQL's
        # time at ingest; 12 to 15 % more messages filed a second without
        # it). Against the tiny tables, its connections forget their
        # plans at geometric intervals (DISCARD PLANS, below): they are
        # made again as the tables grow, until the tables are large.
        connect_args={} if writer else {"options": "-c plan_cache_mode=force_custom_plan"},
    )

    # pool_pre_ping's round trip at every checkout, without it for a
    # connection checked in a moment ago: the writer takes its connections
    # twice a batch, and the ping cost it two round trips each time.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["palais_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if writer:
            uses = record.info.get("palais_uses", 0) + 1
            record.info["palais_uses"] = uses
            if _REPLAN_FROM <= uses <= _REPLAN_UNTIL and uses & (uses - 1) == 0:
                _discard_plans(dbapi_conn)
                return
        since = record.info.get("palais_checked_in")
        if since is not None and time.monotonic() - since < _PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            # The pool drops this connection and opens another.
            raise exc.DisconnectionError() from error
        if not alive:
            raise exc.DisconnectionError()

    return engine


def _discard_plans(dbapi_conn: Any) -> None:
    """Makes the connection plan its statements (and the foreign keys'
    checks) again at their next run; a round trip, which also tells a dead
    connection (the ping's job)."""
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute("DISCARD PLANS")
        # Committed, not rolled back: psycopg forgets its prepared
        # statements at a rollback (they are kept, only their plans go).
        dbapi_conn.commit()
    except Exception as error:
        raise exc.DisconnectionError() from error
