"""The sweep of large objects no ``blob`` row names (PostgreSQL's message bytes).

``PgBlobStore.append_many`` commits the large objects before the writer
commits the rows that name them; when those rows are rolled back (a refused
job, a conflict retry, a crash between the two commits) the objects stay,
named by nothing. This sweep gives their space back.

An object is unnamed for a few milliseconds in the life of every message
too: from its own commit to its rows' commit, on any node. So nothing is
unlinked the first time it is seen. A pass remembers each unnamed object it
has not seen before (table ``blob_orphan``, with when, by the database's
clock: every node's pass agrees on it) and unlinks those remembered at
least ``grace`` ago and still unnamed; a batch never lasts that long. The
table lets any node do the later pass and a restart forget nothing; one
node sweeps at a time (an advisory lock held by the pass's transaction:
the others skip their turn).

Every large object in Palais's database is its own (message bytes, through
``palais.storage.pg_blobs``; no other table names an OID), so "named by no
blob row" is the whole test. An object is known by its OID and by the
creating transaction of its metadata row (``xmin``, kept as ``lo_xmin``):
an OID freed and then given to a new object is not the one that was seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, delete, insert, select, text

from palais.periodic import Periodic
from palais.storage import schema
from palais.storage.pg_blobs import PG_SEGMENT

__all__ = ["GRACE", "BlobSweeper", "SweepCounts", "SweepOutcome", "sweep"]

log = logging.getLogger("palais.storage.blob_sweep")
BO = schema.table(schema.BlobOrphan)

GRACE = timedelta(hours=1)
# Unlinks per pass: one transaction stays short even after a long run of
# rolled-back batches; the rest go at the next pass, at once.
MAX_UNLINKS = 1000
# Held for the pass's transaction: sweeps run once, not once per node.
_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('palais blob sweep', 0))"
_UNNAMED = (
    "SELECT m.oid::bigint, m.xmin::text FROM pg_largeobject_metadata m"
    " WHERE NOT EXISTS (SELECT 1 FROM blob b"
    ' WHERE b.segment = :segment AND b."offset" = m.oid::bigint)'
)
# Checked again in the statement that unlinks: the same object (xmin), still unnamed.
_UNLINK = (
    "SELECT o.lo_oid, lo_unlink(o.lo_oid::oid) FROM blob_orphan o"
    " JOIN pg_largeobject_metadata m ON m.oid = o.lo_oid::oid AND m.xmin::text = o.lo_xmin"
    " WHERE o.lo_oid = ANY(:due) AND NOT EXISTS (SELECT 1 FROM blob b"
    ' WHERE b.segment = :segment AND b."offset" = o.lo_oid)'
)


@dataclass(frozen=True)
class SweepOutcome:
    """What one pass did; ``ran`` False: another node was sweeping (nothing done)."""

    ran: bool
    found: int = 0  # objects no blob row names now
    remembered: int = 0  # of which seen for the first time
    unlinked: int = 0  # remembered a grace period ago, still unnamed: gone
    waiting: int = 0  # remembered, their grace not over yet
    more: bool = False  # more due than one pass unlinks

    def as_dict(self) -> dict[str, object]:
        return {
            "ran": self.ran,
            "found": self.found,
            "remembered": self.remembered,
            "unlinked": self.unlinked,
            "waiting": self.waiting,
        }


def sweep(
    engine: Engine,
    *,
    grace: timedelta = GRACE,
    now: datetime | None = None,
    limit: int = MAX_UNLINKS,
) -> SweepOutcome:
    """One pass (PostgreSQL only), in one transaction; ``now``: the database's clock if None."""
    with engine.begin() as conn:
        if not conn.exec_driver_sql(_LOCK).scalar():
            return SweepOutcome(ran=False)
        at: datetime = now if now is not None else conn.execute(text("SELECT now()")).scalar_one()
        return _pass(conn, at, grace, limit)


def _pass(conn: Connection, at: datetime, grace: timedelta, limit: int) -> SweepOutcome:
    unnamed = {
        int(oid): str(xmin) for oid, xmin in conn.execute(text(_UNNAMED), {"segment": PG_SEGMENT})
    }
    known = {
        int(row.lo_oid): (row.lo_xmin, row.seen_at)
        for row in conn.execute(select(BO.c.lo_oid, BO.c.lo_xmin, BO.c.seen_at))
    }
    # Named since, unlinked by erase, or its OID now another object's: forgotten.
    stale = [oid for oid, (xmin, _) in known.items() if unnamed.get(oid) != xmin]
    if stale:
        conn.execute(delete(BO).where(BO.c.lo_oid.in_(stale)))
    kept = {oid: seen for oid, (xmin, seen) in known.items() if unnamed.get(oid) == xmin}
    new = [
        {"lo_oid": oid, "lo_xmin": xmin, "seen_at": at}
        for oid, xmin in unnamed.items()
        if oid not in kept
    ]
    if new:
        conn.execute(insert(BO), new)
    cutoff = at - grace
    due = sorted(oid for oid, seen in kept.items() if seen <= cutoff)
    batch, more = due[:limit], len(due) > limit
    unlinked = 0
    if batch:
        unlinked = len(conn.execute(text(_UNLINK), {"due": batch, "segment": PG_SEGMENT}).all())
        # Those not unlinked were named or replaced at the last moment: forgotten too.
        conn.execute(delete(BO).where(BO.c.lo_oid.in_(batch)))
    return SweepOutcome(
        ran=True,
        found=len(unnamed),
        remembered=len(new),
        unlinked=unlinked,
        waiting=len(kept) - len(due) + len(new),
        more=more,
    )


class BlobSweeper(Periodic):
    """The sweep in the gateway (PostgreSQL only): at start, then every ``interval`` seconds."""

    def __init__(
        self, engine: Engine, *, grace: timedelta = GRACE, interval: float = 900.0
    ) -> None:
        super().__init__("palais-blob-sweep", interval)
        self._engine = engine
        self.grace = grace
        self.unlinked = 0  # by this process

    async def look(self) -> bool:
        outcome = await asyncio.to_thread(sweep, self._engine, grace=self.grace)
        self.unlinked += outcome.unlinked
        if outcome.remembered or outcome.unlinked:
            log.info("large objects swept %s", outcome.as_dict())
        return outcome.more


class SweepCounts(Collector):
    """The sweeper's count, read at each scrape of /metrics."""

    def __init__(self, sweeper: BlobSweeper) -> None:
        self._sweeper = sweeper

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "palais_blob_sweep_unlinked",
            "Large objects no blob row named, unlinked by this node's sweeps",
            value=self._sweeper.unlinked,
        )
