"""The write path's hot statements, on the DBAPI cursor of the writer's connection.

Filing a message runs a dozen statements; through SQLAlchemy's expression
layer each costs about ten times the statement itself, and the writer
thread (which holds the GIL while it works) becomes the bottleneck of SMTP
ingest. These statements are plain, portable SQL (SQLite >= 3.35 and
PostgreSQL both have RETURNING and ON CONFLICT), executed inside the same
transaction and savepoints SQLAlchemy manages.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection


class Rows:
    """Raw statements for one connection, with the driver's parameter style."""

    __slots__ = ("_cur", "_pg")

    def __init__(self, conn: Connection) -> None:
        self._pg = conn.dialect.paramstyle != "qmark"
        raw = conn.connection.dbapi_connection
        assert raw is not None
        self._cur = raw.cursor()

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._pg else text

    def one(self, text: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        self._cur.execute(self._sql(text), params)
        row = self._cur.fetchone()
        return None if row is None else tuple(row)

    def all(self, text: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self._cur.execute(self._sql(text), params)
        return [tuple(r) for r in self._cur.fetchall()]

    def run(self, text: str, params: tuple[Any, ...]) -> None:
        self._cur.execute(self._sql(text), params)

    def many(self, text: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._cur.executemany(self._sql(text), rows)

    def close(self) -> None:
        self._cur.close()


def rows_for(conn: Connection) -> Rows:
    # One cursor per connection for the life of the transaction is enough;
    # cache it on the connection's info dict, which SQLAlchemy keeps per DBAPI connection.
    info = conn.info
    cached = info.get("palais_rows")
    if cached is None:
        cached = Rows(conn)
        info["palais_rows"] = cached
    assert isinstance(cached, Rows)
    return cached
