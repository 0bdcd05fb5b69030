"""SQL building blocks shared by the reads and the writes: tables, flags, times, chunks."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection

from palais.storage import schema

MB = schema.table(schema.Mailbox)
EN = schema.table(schema.Entry)
MS = schema.table(schema.Message)
BL = schema.table(schema.Blob)
PL = schema.table(schema.Placement)
DO = schema.table(schema.Dossier)

# The blob segment of receipt mails: their bytes lie in evidence_log.receipt
# (the offset is the log position), written with the rows that log them.
EVIDENCE_SEGMENT = "evidence-log"

# Values per IN (...) list: well below SQLite's and PostgreSQL's parameter limits.
CHUNK = 500
_EMPTY: frozenset[str] = frozenset()
T = TypeVar("T")


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


@functools.lru_cache(maxsize=4096)
def decode_flags(text: str) -> frozenset[str]:
    # A box holds a handful of distinct flag sets: share them rather than
    # building 100,000 equal frozensets at SELECT.
    return frozenset(text.split()) if text else _EMPTY


def chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def when(conn: Connection, value: datetime | None) -> Any:
    """A timestamp as SQLAlchemy's DateTime column would have stored it."""
    if value is None or conn.dialect.name != "sqlite":
        return value
    # SQLAlchemy keeps SQLite datetimes as naive UTC text; do the same
    # (isoformat spells it for a fraction of strftime's cost).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def utc(value: datetime | str) -> datetime:
    """A stored timestamp as an aware datetime (SQLite keeps text, without zone: UTC)."""
    if isinstance(value, str):
        try:
            # Parsing the zone costs far less than replace(tzinfo=...) afterwards.
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # the text had a zone of its own
            value = datetime.fromisoformat(value)
    # PostgreSQL answers in the session's TimeZone: the same instant, in UTC as on SQLite.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def driver(conn: Connection) -> tuple[Any, str]:
    """A DB-API cursor in ``conn``'s transaction, and its parameter mark.

    Whole-box reads go straight to the driver: for 100,000 rows SQLAlchemy's
    result layer costs several times the query.
    """
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return conn.connection.dbapi_connection.cursor(), mark  # type: ignore[union-attr]
