"""Alerts kept: the people's settings and the outbox of notices (``palais.mailbox.alerts``).

Two ways in, both durable:

- a dossier's event (status, hearing, parties) carries ``DossierEventAlert``
  in the plan that applies it: its notices commit with it (the record
  writer below), since that path is not a hot one;
- new messages and receipts are derived after commit from the message
  rows, not written by the filing job: filing is the hot path, and people
  without alerts must pay nothing there. ``AlertStore.gather`` reads the
  placements of newly filed messages (message id above a durable cursor)
  of the few owners who asked for alerts, through the index on (owner,
  message_id), and adds their notices; the outbox's unique key (person,
  message, kind) makes reading the same rows twice harmless. A new message
  row is what tells a new arrival from a message moved back from
  Supprimés or copied: neither makes a row (the mailbox events a filing
  publishes could not tell them apart). Measured on SQLite with 20,000
  messages filed, 200 of them to an alerted lawyer: a look finding nothing
  new takes 5-8 ms, one reading the whole window again 29 ms.

Message ids are allocated before their transaction commits, so on several
nodes a lower id may commit after a higher one was read. The cursor
therefore trails the newest id by ``grace`` seconds, and the window behind
it is read again every ``grace / 4`` seconds; between two such reads only
ids above what this process already read are looked at.

Sending claims a person's due notices with ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL and a lease (``lease_until``): one node sends them,
the others skip them; marked sent after the relay accepted them. A node
that dies between the relay's answer and the mark leaves the lease to run
out, and the notice is sent again: the mail's Message-ID is the same.
"""

from __future__ import annotations

import asyncio
import time as clock
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from palais.mailbox.alerts import (
    AlertMode,
    AlertSetting,
    Arrival,
    DossierEventAlert,
    NoticeKind,
    PendingNotice,
    notice_kind,
)
from palais.mailbox.model import BoxKind
from palais.storage import schema
from palais.storage.sql import DO, MS, PL, utc
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["AlertStore", "record_dossier_event", "write_dossier_event_alert"]

AS = schema.table(schema.AlertSetting)
AN = schema.table(schema.AlertNotice)
AK = schema.table(schema.AlertCursor)
AC = schema.table(schema.Account)
PA = schema.table(schema.Participation)
SV = schema.table(schema.Service)
EL = schema.table(schema.EvidenceLog)
FI = schema.table(schema.DossierFiche)
CURSOR = "messages"
PENDING, SENT, FAILED = "pending", "sent", "failed"
KEEP = timedelta(days=30)  # how long a notice told stays in the outbox
_TOLD = (BoxKind.RECUS.value, BoxKind.ACCUSES.value)
T = TypeVar("T")


def _setting(r: Any) -> AlertSetting:
    return AlertSetting(
        person=r.person,
        owner=r.owner,
        address=r.address,
        mode=AlertMode(r.mode),
        since=utc(r.since),
    )


def _insert(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(AN)


def _add_notices(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    if not rows:
        return 0
    stmt = _insert(conn).on_conflict_do_nothing(index_elements=["person", "message_id", "kind"])
    done = 0
    for row in rows:  # a handful at a time: only people with alerts
        done += len(conn.execute(stmt.values(**row).returning(AN.c.id)).all())
    return done


def record_dossier_event(conn: Connection, dossier: str, at: datetime) -> int:
    """Notices of an event in a dossier's life, for everyone with alerts who
    follows it (its lawyers, its service), in the caller's transaction (the
    writer job applying the event)."""
    row = conn.execute(
        select(DO.c.id, SV.c.address)
        .join(SV, SV.c.id == DO.c.service_id)
        .where(DO.c.number == dossier)
    ).first()
    if row is None:
        return 0
    owners = {str(row.address)} | {
        str(a)
        for a in conn.execute(
            select(AC.c.address)
            .join(PA, PA.c.account_id == AC.c.id)
            .where(PA.c.dossier_id == row.id)
        ).scalars()
    }
    people = conn.execute(select(AS.c.person).where(AS.c.owner.in_(sorted(owners)))).scalars()
    return _add_notices(
        conn,
        [
            {
                "person": person,
                "kind": NoticeKind.DOSSIER_EVENT.value,
                "dossier": dossier,
                "message_id": None,
                "occurred_at": at,
                "state": PENDING,
                "attempts": 0,
            }
            for person in people
        ],
    )


def write_dossier_event_alert(conn: Connection, ctx: WriteContext, record: Any) -> None:
    """The record writer for ``DossierEventAlert``, which a plan carries."""
    assert isinstance(record, DossierEventAlert)
    record_dossier_event(conn, record.dossier, record.at)


class AlertStore:
    """Settings and outbox; reads on the reader, changes through the writer."""

    def __init__(
        self,
        reader: Engine,
        writer: CommitQueue,
        *,
        grace: float = 120.0,
        monotonic: Callable[[], float] = clock.monotonic,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._grace = grace
        self._monotonic = monotonic
        # (when, newest message id then): the cursor may move to an id read
        # ``grace`` seconds ago.
        self._seen: deque[tuple[float, int]] = deque()
        self._read_upto: int | None = None  # ids this process has read up to
        self._window_read_at = -float("inf")

    async def _query(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._reader.connect() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    # -- settings ------------------------------------------------------------------

    async def setting(self, person: str) -> AlertSetting | None:
        def read(conn: Connection) -> AlertSetting | None:
            r = conn.execute(select(AS).where(AS.c.person == person)).first()
            return None if r is None else _setting(r)

        return await self._query(read)

    async def put(self, setting: AlertSetting) -> AlertSetting:
        """Record a person's setting; one they had keeps its ``since``."""

        def work(conn: Connection, ctx: WriteContext) -> AlertSetting:
            r = conn.execute(select(AS).where(AS.c.person == setting.person)).first()
            values = {
                "owner": setting.owner,
                "address": setting.address,
                "mode": setting.mode.value,
            }
            if r is None:
                conn.execute(
                    AS.insert().values(person=setting.person, since=setting.since, **values)
                )
                return setting
            conn.execute(update(AS).where(AS.c.person == setting.person).values(**values))
            return AlertSetting(
                setting.person, setting.owner, setting.address, setting.mode, utc(r.since)
            )

        return await self._writer.submit(work)

    async def remove(self, person: str) -> bool:
        """No more alerts for ``person``: their setting and unsent notices go."""

        def work(conn: Connection, ctx: WriteContext) -> bool:
            conn.execute(delete(AN).where(AN.c.person == person, AN.c.state == PENDING))
            return bool(conn.execute(delete(AS).where(AS.c.person == person)).rowcount)

        return await self._writer.submit(work)

    # -- deriving notices ---------------------------------------------------------

    async def gather(self, now: datetime) -> int:
        """Add the notices of messages filed since the last look; how many."""
        tick = self._monotonic()
        full = tick - self._window_read_at >= self._grace / 4
        read_upto = self._read_upto

        def read(
            conn: Connection,
        ) -> tuple[list[AlertSetting], int, int, list[Any], dict[int, frozenset[str]], set[int]]:
            # A deactivated account (departed, merged) is told nothing more.
            active = select(AS).join(AC, AC.c.address == AS.c.person).where(AC.c.active.is_(True))
            settings = [_setting(r) for r in conn.execute(active)]
            cursor = conn.execute(select(AK.c.position).where(AK.c.name == CURSOR)).scalar()
            newest = conn.execute(select(func.max(MS.c.id))).scalar()
            cursor, newest = int(cursor or 0), int(newest or 0)
            if not settings:
                return settings, cursor, newest, [], {}, set()
            after = cursor if full or read_upto is None else max(cursor, read_upto)
            found = conn.execute(
                select(
                    PL.c.owner,
                    PL.c.kind,
                    PL.c.dossier,
                    PL.c.message_id,
                    MS.c.internaldate,
                    MS.c.message_id.label("ident"),
                )
                .join(MS, MS.c.id == PL.c.message_id)
                .where(
                    PL.c.owner.in_(sorted({s.owner for s in settings})),
                    PL.c.message_id > after,
                    PL.c.kind.in_(_TOLD),
                    PL.c.dossier.is_not(None),
                )
            ).all()
            receipts = {
                int(r.message_id): str(r.ident)
                for r in found
                if r.kind == BoxKind.ACCUSES.value and r.ident
            }
            return (
                settings,
                cursor,
                newest,
                list(found),
                _receipt_events(conn, receipts),
                _fiches(conn, found),
            )

        settings, cursor, newest, found, events, fiches = await self._query(read)
        if full:
            self._window_read_at = tick
        self._read_upto = newest
        self._seen.append((tick, newest))
        target = cursor
        while self._seen and self._seen[0][0] <= tick - self._grace:
            target = max(target, self._seen.popleft()[1])
        rows: list[dict[str, Any]] = []
        by_owner: dict[str, list[AlertSetting]] = {}
        for s in settings:
            by_owner.setdefault(s.owner, []).append(s)
        for r in found:
            arrival = Arrival(
                owner=r.owner,
                kind=BoxKind(r.kind),
                dossier=r.dossier,
                message=int(r.message_id),
                at=utc(r.internaldate),
                events=events.get(int(r.message_id), frozenset()),
                fiche=int(r.message_id) in fiches,
            )
            kind = notice_kind(arrival)
            if kind is None:
                continue
            for s in by_owner.get(arrival.owner, ()):
                if arrival.at >= s.since:
                    rows.append(
                        {
                            "person": s.person,
                            "kind": kind.value,
                            "dossier": arrival.dossier,
                            "message_id": arrival.message,
                            "occurred_at": arrival.at,
                            "state": PENDING,
                            "attempts": 0,
                        }
                    )
        if rows:
            rows = await self._query(lambda c: _not_told(c, rows, cursor))
        if not rows and target <= cursor:
            return 0

        def work(conn: Connection, ctx: WriteContext) -> int:
            added = _add_notices(conn, rows)
            if target > cursor:
                conn.execute(
                    update(AK)
                    .where(AK.c.name == CURSOR, AK.c.position < target)
                    .values(position=target)
                )
                # Notices told long ago and behind the cursor (never derived
                # again) leave the outbox.
                conn.execute(
                    delete(AN).where(
                        AN.c.state.in_((SENT, FAILED)),
                        AN.c.message_id.is_(None) | (AN.c.message_id <= target),
                        AN.c.occurred_at < now - KEEP,
                    )
                )
            return added

        return await self._writer.submit(work)

    # -- sending ------------------------------------------------------------------

    async def waiting(self, now: datetime) -> list[tuple[AlertSetting, datetime]]:
        """Everyone with notices that may be sent now, and the oldest one's time."""

        def read(conn: Connection) -> list[tuple[AlertSetting, datetime]]:
            rows = conn.execute(
                select(AS, func.min(AN.c.occurred_at).label("oldest"))
                .join(AN, AN.c.person == AS.c.person)
                .join(AC, AC.c.address == AS.c.person)
                .where(AC.c.active.is_(True), *_sendable(now))
                .group_by(AS.c.person, AS.c.owner, AS.c.address, AS.c.mode, AS.c.since)
            ).all()
            return [(_setting(r), utc(r.oldest)) for r in rows]

        return await self._query(read)

    async def claim(
        self, person: str, upto: datetime, now: datetime, lease: float
    ) -> list[PendingNotice]:
        """Take a person's sendable notices that happened up to ``upto``, for
        ``lease`` seconds; none if another node holds them."""

        def work(conn: Connection, ctx: WriteContext) -> list[PendingNotice]:
            rows = conn.execute(
                select(AN.c.id, AN.c.kind, AN.c.dossier, AN.c.occurred_at, AN.c.attempts)
                .where(AN.c.person == person, AN.c.occurred_at <= upto, *_sendable(now))
                .order_by(AN.c.id)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer
            ).all()
            if not rows:
                return []
            ids = [int(r.id) for r in rows]
            conn.execute(
                update(AN)
                .where(AN.c.id.in_(ids))
                .values(lease_until=now + timedelta(seconds=lease))
            )
            return [
                PendingNotice(
                    int(r.id), NoticeKind(r.kind), r.dossier, utc(r.occurred_at), int(r.attempts)
                )
                for r in rows
            ]

        return await self._writer.submit(work)

    async def sent(self, ids: Sequence[int], now: datetime) -> None:
        def work(conn: Connection, ctx: WriteContext) -> None:
            conn.execute(
                update(AN)
                .where(AN.c.id.in_(list(ids)))
                .values(state=SENT, sent_at=now, lease_until=None, last_error=None)
            )

        await self._writer.submit(work)

    async def not_sent(self, ids: Sequence[int], error: str, *, retry_at: datetime | None) -> None:
        """The relay did not take them: tried again at ``retry_at``, or never
        (None: the relay refused them for good)."""

        def work(conn: Connection, ctx: WriteContext) -> None:
            conn.execute(
                update(AN)
                .where(AN.c.id.in_(list(ids)))
                .values(
                    state=PENDING if retry_at is not None else FAILED,
                    attempts=AN.c.attempts + 1,
                    next_try=retry_at,
                    lease_until=None,
                    last_error=error[:500],
                )
            )

        await self._writer.submit(work)


def _fiches(conn: Connection, found: Sequence[Any]) -> set[int]:
    """Which of these Reçus arrivals are their dossier's Fiche (read by the
    Fiche table's key, dossier and owner): told with the dossier's event."""
    recus = [r for r in found if r.kind == BoxKind.RECUS.value]
    if not recus:
        return set()
    return {
        int(m)
        for m in conn.execute(
            select(FI.c.message_id)
            .join(DO, DO.c.id == FI.c.dossier_id)
            .where(
                DO.c.number.in_(sorted({str(r.dossier) for r in recus})),
                FI.c.owner.in_(sorted({str(r.owner) for r in recus})),
            )
        ).scalars()
    }


def _receipt_events(conn: Connection, idents: dict[int, str]) -> dict[int, frozenset[str]]:
    """The events each receipt mail proves, by its message row: a receipt's
    Message-ID is ``<evidence id@domain>`` (``palais.pki.receipt``), and the
    log is indexed by evidence id."""
    by_evidence = {
        ident.strip().strip("<>").partition("@")[0]: mid for mid, ident in idents.items()
    }
    if not by_evidence:
        return {}
    rows = conn.execute(
        select(EL.c.evidence_id, EL.c.events).where(EL.c.evidence_id.in_(sorted(by_evidence)))
    )
    return {by_evidence[str(r.evidence_id)]: frozenset(str(r.events).split(",")) for r in rows}


def _sendable(now: datetime) -> list[Any]:
    return [
        AN.c.state == PENDING,
        (AN.c.next_try.is_(None)) | (AN.c.next_try <= now),
        (AN.c.lease_until.is_(None)) | (AN.c.lease_until < now),
    ]


def _not_told(conn: Connection, rows: list[dict[str, Any]], cursor: int) -> list[dict[str, Any]]:
    """The rows whose notice is not in the outbox yet (read before asking the
    writer: most looks find every arrival of the window told already)."""
    people = sorted({r["person"] for r in rows})
    told = {
        (str(p), int(m), str(k))
        for p, m, k in conn.execute(
            select(AN.c.person, AN.c.message_id, AN.c.kind).where(
                AN.c.person.in_(people), AN.c.message_id > cursor
            )
        )
    }
    return [r for r in rows if (r["person"], r["message_id"], r["kind"]) not in told]
