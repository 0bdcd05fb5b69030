"""The mail store: boxes, entries and message bytes, behind ``MailAccess``."""

from __future__ import annotations

import asyncio
import bisect
import functools
import re
import threading
import weakref
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, case, delete, func, insert, select, update

from palais.mailbox.boxes import (
    GLOBAL_BOXES,
    NUMBER_IN_TEXT,
    BoxKind,
    BoxRef,
    MoveOutcome,
    boxes_for_dossier,
    check_append,
    decide_expunge,
    decide_move,
)
from palais.mailbox.errors import CannotDoThat, NoSuchMailbox, PalaisError
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary, header_size, summarize
from palais.mailbox.model import (
    DELIMITER,
    INBOX,
    AppendResult,
    CopyResult,
    Entry,
    FlagMode,
    HeaderField,
    MailboxEvent,
    MailboxInfo,
    MessageRecord,
    SpecialUse,
    StoreResult,
)
from palais.mailbox.ports import EntryTable, Unsubscribe, flag_id_array
from palais.mailbox.routing import FilingPlan
from palais.storage import schema
from palais.storage.blobs import BlobCorrupted, BlobLocation, BlobStore, sha256_hex
from palais.storage.hub import EventHub
from palais.storage.memo import Memo
from palais.storage.rows import rows_for
from palais.storage.writer import CommitQueue, WriteContext

T = TypeVar("T")
# Messages from this size on are checked against their SHA-256 off the event
# loop: hashing a few MiB would hold every other client for milliseconds.
_CHECK_APART = 1024 * 1024

MB = schema.table(schema.Mailbox)
EN = schema.table(schema.Entry)
MS = schema.table(schema.Message)
BL = schema.table(schema.Blob)
PL = schema.table(schema.Placement)
DO = schema.table(schema.Dossier)

_CHUNK = 500
_SEEN = "\\Seen"
_DELETED = "\\Deleted"
_FLAG_RE = re.compile(r"^\\?[^\s()\]{%*\"\\]+$")


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


_EMPTY: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=4096)
def decode_flags(text: str) -> frozenset[str]:
    # A box holds a handful of distinct flag sets: share them rather than
    # building 100,000 equal frozensets at SELECT.
    return frozenset(text.split()) if text else _EMPTY


def _chunks(items: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _new_uidvalidity() -> int:
    # Seconds since the epoch: grows across re-creations, fits in 32 bits until 2106.
    return int(datetime.now(UTC).timestamp()) & 0xFFFFFFFF


def ensure_boxes(conn: Connection, owner: str, dossier: str | None = None) -> None:
    """Create the global views of an owner, or the five boxes of one of its dossiers."""
    refs = GLOBAL_BOXES if dossier is None else boxes_for_dossier(dossier)
    existing = set(conn.execute(select(MB.c.name).where(MB.c.owner == owner)).scalars())
    for ref in refs:
        if ref.name in existing:
            continue
        use = ref.special_use
        conn.execute(
            insert(MB).values(
                owner=owner,
                name=ref.name,
                special_use=use.value if use else None,
                kind=ref.kind.value,
                dossier=ref.dossier,
                uidvalidity=_new_uidvalidity(),
                uidnext=1,
                highestmodseq=1,
            )
        )


@dataclass(frozen=True, slots=True)
class FiledMessage:
    message_id: int
    sha256: str
    size: int
    uids: dict[str, int]  # "owner/box name" -> uid
    resent: bool = False  # an identical earlier filing answered; nothing was filed (no uids)


def _allocate(conn: Connection, mailbox_id: int, count: int) -> tuple[int, int, int]:
    """Reserve ``count`` UIDs and a new modseq; returns (first uid, modseq, uidvalidity).

    One UPDATE ... RETURNING: it also locks the box's row on PostgreSQL, so
    that several nodes never hand out the same UID.
    """
    row = rows_for(conn).one(
        "UPDATE mailbox SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1"
        " WHERE id = ? RETURNING uidnext, highestmodseq, uidvalidity",
        (count, mailbox_id),
    )
    assert row is not None
    return int(row[0]) - count, int(row[1]), int(row[2])


def _bump_modseq(conn: Connection, mailbox_id: int) -> int:
    row = rows_for(conn).one(
        "UPDATE mailbox SET highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING highestmodseq",
        (mailbox_id,),
    )
    assert row is not None
    return int(row[0])


def _store_blob(conn: Connection, sha: str, where: BlobLocation) -> None:
    # A second copy of the same bytes only takes a reference; its appended
    # bytes in the pack stay unreferenced (reclaimed by compaction).
    rows_for(conn).run(
        'INSERT INTO blob (sha256, segment, "offset", length, refcount) VALUES (?, ?, ?, ?, 1)'
        " ON CONFLICT (sha256) DO UPDATE SET refcount = blob.refcount + 1",
        (sha, where.segment, where.offset, where.length),
    )


def _insert_message(
    conn: Connection,
    ctx: WriteContext,
    data: bytes,
    summary: MessageSummary,
    *,
    internaldate: datetime,
    sender: str,
    fingerprint: str,
    dossier_id: int | None,
) -> tuple[int, str]:
    sha = ctx.sha256(data)
    _store_blob(conn, sha, ctx.locations[sha])
    row = rows_for(conn).one(
        "INSERT INTO message (blob, size, header_size, internaldate, sent_date, message_id,"
        " subject, from_addr, to_addr, cc_addr, bcc_addr, sender, sender_fingerprint, dossier_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            sha,
            len(data),
            summary.header_size,
            _when(conn, internaldate),
            _when(conn, summary.sent_date),
            summary.message_id,
            summary.subject,
            summary.from_addr,
            summary.to_addr,
            summary.cc_addr,
            summary.bcc_addr,
            sender,
            fingerprint,
            dossier_id,
        ),
    )
    assert row is not None
    return int(row[0]), sha


def _when(conn: Connection, value: datetime | None) -> Any:
    """A timestamp as SQLAlchemy's DateTime column would have stored it."""
    if value is None or conn.dialect.name != "sqlite":
        return value
    # SQLAlchemy keeps SQLite datetimes as naive UTC text; do the same.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _box_id(
    conn: Connection, owner: str, ref: BoxRef, cache: dict[Any, Any] | None = None
) -> int | None:
    key = ("box", owner, ref.name)
    if cache is not None and key in cache:
        return int(cache[key])
    box = conn.execute(select(MB.c.id).where(MB.c.owner == owner, MB.c.name == ref.name)).scalar()
    if box is None:
        return None
    if cache is not None:
        cache[key] = int(box)  # boxes are never renamed nor removed
    return int(box)


def _place(
    conn: Connection,
    ctx: WriteContext,
    owner: str,
    message_id: int,
    kind: BoxKind,
    dossier: str | None,
    flags: frozenset[str],
    origin: BoxKind | None = None,
) -> dict[int, int]:
    """Put a message in an owner's box (both views); returns {mailbox id: uid}."""
    return _place_all(conn, ctx, message_id, dossier, [(owner, kind, flags)], origin)[0]


def _place_all(
    conn: Connection,
    ctx: WriteContext,
    message_id: int,
    dossier: str | None,
    holders: Sequence[tuple[str, BoxKind, frozenset[str]]],
    origin: BoxKind | None = None,
) -> list[dict[int, int]]:
    """Put a message in several owners' boxes, both views each, in three statements.

    Returns {mailbox id: uid} per holder. Filing one message touches four
    boxes; a statement per placement, per UID and per entry cost the writer
    thread a GIL handoff each, which is what limited SMTP ingest.
    """
    if len({(owner, kind) for owner, kind, _ in holders}) != len(holders):
        # One placement per owner and kind: a repeated holder is placed alone.
        return [r for h in holders for r in _place_all(conn, ctx, message_id, dossier, [h], origin)]
    rows = rows_for(conn)
    placed = rows.all(
        "INSERT INTO placement (owner, message_id, kind, dossier, origin) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?)"] * len(holders))
        + " RETURNING id, owner, kind",
        tuple(
            value
            for owner, kind, _ in holders
            for value in (owner, message_id, kind.value, dossier, origin.value if origin else None)
        ),
    )
    placement_of = {(owner, kind): int(pid) for pid, owner, kind in placed}
    targets: list[tuple[int, int, int, frozenset[str]]] = []  # holder, box, placement, flags
    for index, (owner, kind, flags) in enumerate(holders):
        refs = [BoxRef(kind, None)] + ([BoxRef(kind, dossier)] if dossier else [])
        for ref in refs:
            box = _box_id(conn, owner, ref, ctx.cache)
            if box is not None:  # without access to the dossier, only the global view
                targets.append((index, box, placement_of[owner, kind.value], flags))
    out: list[dict[int, int]] = [{} for _ in holders]
    if not targets:
        return out
    allocated = rows.all(
        "UPDATE mailbox SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
        f" WHERE id IN ({', '.join(['?'] * len(targets))}) RETURNING id, uidnext, highestmodseq",
        tuple(box for _, box, _, _ in targets),
    )
    given = {int(box): (int(uidnext) - 1, int(modseq)) for box, uidnext, modseq in allocated}
    rows.run(
        "INSERT INTO entry (mailbox_id, uid, message_id, placement_id, flags, modseq) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(targets)),
        tuple(
            value
            for _, box, placement, flags in targets
            for value in (
                box,
                given[box][0],
                message_id,
                placement,
                encode_flags(flags),
                given[box][1],
            )
        ),
    )
    for index, box, _, flags in targets:
        uid, modseq = given[box]
        ctx.events.append(MailboxEvent(box, "exists", uid, flags, modseq))
        out[index][box] = uid
    return out


def _remove_entries(conn: Connection, ctx: WriteContext, placement: int) -> None:
    rows = conn.execute(
        select(EN.c.mailbox_id, EN.c.uid).where(EN.c.placement_id == placement)
    ).all()
    for r in rows:
        modseq = _bump_modseq(conn, r.mailbox_id)
        conn.execute(delete(EN).where(EN.c.mailbox_id == r.mailbox_id, EN.c.uid == r.uid))
        ctx.events.append(MailboxEvent(int(r.mailbox_id), "expunge", int(r.uid), modseq=modseq))


def _drop_placement(conn: Connection, ctx: WriteContext, placement: int) -> None:
    """Remove a placement from both views; the message goes when nobody holds it."""
    message_id = conn.execute(select(PL.c.message_id).where(PL.c.id == placement)).scalar_one()
    _remove_entries(conn, ctx, placement)
    conn.execute(delete(PL).where(PL.c.id == placement))
    _release_messages(conn, ctx, {int(message_id)})


def _move_placement(
    conn: Connection,
    ctx: WriteContext,
    placement: int,
    kind: BoxKind,
    origin: BoxKind | None,
    flags: frozenset[str],
) -> dict[int, int]:
    row = conn.execute(select(PL).where(PL.c.id == placement)).one()
    _remove_entries(conn, ctx, placement)
    conn.execute(delete(PL).where(PL.c.id == placement))
    return _place(conn, ctx, row.owner, int(row.message_id), kind, row.dossier, flags, origin)


def _release_messages(conn: Connection, ctx: WriteContext, message_ids: set[int]) -> None:
    """Delete messages nobody holds any more, and their bytes if no message shares them."""
    for mid in message_ids:
        still = conn.execute(select(PL.c.id).where(PL.c.message_id == mid).limit(1)).first()
        if still is not None:
            continue
        sha = conn.execute(select(MS.c.blob).where(MS.c.id == mid)).scalar_one()
        conn.execute(delete(MS).where(MS.c.id == mid))
        conn.execute(update(BL).where(BL.c.sha256 == sha).values(refcount=BL.c.refcount - 1))
        blob = conn.execute(
            select(BL.c.refcount, BL.c.segment, BL.c.offset, BL.c.length).where(BL.c.sha256 == sha)
        ).one()
        if blob.refcount <= 0:
            conn.execute(delete(BL).where(BL.c.sha256 == sha))
            ctx.erase_after_commit[sha] = BlobLocation(blob.segment, blob.offset, blob.length)


@dataclass(frozen=True, slots=True)
class _Held:
    """An entry of the box being acted on, with its placement."""

    uid: int
    placement: int
    message_id: int
    flags: frozenset[str]
    kind: BoxKind
    dossier: str | None
    origin: BoxKind | None


def _held(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> list[_Held]:
    out: list[_Held] = []
    for part in _chunks(sorted(set(uids))):
        rows = conn.execute(
            select(
                EN.c.uid,
                EN.c.placement_id,
                EN.c.message_id,
                EN.c.flags,
                PL.c.kind,
                PL.c.dossier,
                PL.c.origin,
            )
            .join(PL, PL.c.id == EN.c.placement_id)
            .where(EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part))
        ).all()
        out.extend(
            _Held(
                int(r.uid),
                int(r.placement_id),
                int(r.message_id),
                decode_flags(r.flags),
                BoxKind(r.kind),
                r.dossier,
                BoxKind(r.origin) if r.origin else None,
            )
            for r in rows
        )
    out.sort(key=lambda h: h.uid)
    return out


class MailStore:
    """Implements ``palais.mailbox.ports.MailAccess`` on SQL plus the pack store."""

    def __init__(
        self, reader: Engine, writer: CommitQueue, blobs: BlobStore, hub: EventHub
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._blobs = blobs
        self._hub = hub
        self._owners: dict[int, str] = {}
        self._dossier_ids: dict[str, int] = {}
        self._locations: dict[str, BlobLocation] = {}
        self._memo = Memo()
        self._mark = "?" if reader.dialect.paramstyle == "qmark" else "%s"
        self._sqlite = reader.dialect.name == "sqlite"
        self._own = threading.local()
        self._own_conns: list[Any] = []
        writer.on_erased.append(self._forget_blob)

    # -- helpers -------------------------------------------------------------

    def _read(self, fn: Callable[[Connection], Any]) -> Any:
        with self._reader.connect() as conn:
            return fn(conn)

    def _read_raw(self, fn: Callable[[Any, str], T]) -> T:
        """``fn(cursor, parameter mark)``: one statement, straight on the driver.

        For the reads every FETCH makes: SQLAlchemy's Connection object, and
        even a pool checkout, cost more than the statement itself. On SQLite
        each thread keeps one connection of its own in autocommit (a WAL
        reader holds no lock between statements); elsewhere the pool lends one.
        """
        if self._sqlite:
            conn: Any = getattr(self._own, "conn", None)
            if conn is None:
                lent = self._reader.raw_connection()
                lent.detach()  # this thread's for good; closed by close()
                self._own_conns.append(lent)
                conn = self._own.conn = lent.dbapi_connection
            cur = conn.cursor()
            try:
                return fn(cur, self._mark)
            finally:
                cur.close()  # resets the statement: no read transaction lingers
        raw = self._reader.raw_connection()
        try:
            cur = raw.cursor()
            try:
                return fn(cur, self._mark)
            finally:
                cur.close()
        finally:
            raw.close()

    def close(self) -> None:
        """Close the connections kept by ``_read_raw``."""
        for conn in self._own_conns:
            conn.close()
        self._own_conns.clear()
        self._own = threading.local()

    def _check_owner(self, who: Identity, mailbox_id: int) -> None:
        owner = self._owners.get(mailbox_id)
        if owner is None:
            owner = self._read(
                lambda c: c.execute(select(MB.c.owner).where(MB.c.id == mailbox_id)).scalar()
            )
            if owner is None:
                raise NoSuchMailbox()
            self._owners[mailbox_id] = owner
        if owner != who.mailbox_owner:
            raise NoSuchMailbox(reason=f"{who.address} asked for box {mailbox_id} of {owner}")

    def _infos(self, conn: Connection, owner: str, name: str | None = None) -> list[MailboxInfo]:
        q = select(MB).where(MB.c.owner == owner)
        if name is not None:
            q = q.where(MB.c.name == name)
        boxes = conn.execute(q.order_by(MB.c.id)).all()
        if not boxes:
            return []
        # Counts come from what the read cache knows for the box's current
        # key (a table kept for SELECT, or counts taken earlier); only the
        # other boxes have their entries counted.
        cache = _read_cache(self)
        counts: dict[int, tuple[int, int]] = {}
        keys: dict[int, _BoxKey] = {}
        for b in boxes:
            key = (int(b.uidvalidity), int(b.highestmodseq), int(b.uidnext))
            known = cache.counts_for(b.id, key)
            if known is None and cache.has_table(b.id):
                table = cache.table(conn, b.id, key)
                known = (len(table), table.unseen)
            if known is not None:
                counts[b.id] = known
            else:
                keys[b.id] = key
        if keys:
            unseen_expr = func.sum(case((EN.c.flags.like("%\\Seen%", escape="!"), 0), else_=1))
            for r in conn.execute(
                select(EN.c.mailbox_id, func.count().label("n"), unseen_expr.label("unseen"))
                .where(EN.c.mailbox_id.in_(list(keys)))
                .group_by(EN.c.mailbox_id)
            ):
                counts[r.mailbox_id] = (int(r.n), int(r.unseen or 0))
            for box_id, key in keys.items():
                n, unseen = counts.setdefault(box_id, (0, 0))
                cache.remember_counts(box_id, key, n, unseen)
        return [
            MailboxInfo(
                id=b.id,
                name=b.name,
                uidvalidity=int(b.uidvalidity),
                uidnext=int(b.uidnext),
                highestmodseq=int(b.highestmodseq),
                messages=counts.get(b.id, (0, 0))[0],
                unseen=counts.get(b.id, (0, 0))[1],
                special_use=SpecialUse(b.special_use) if b.special_use else None,
            )
            for b in boxes
        ]

    # -- MailAccess ----------------------------------------------------------

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        infos: list[MailboxInfo] = self._read(lambda c: self._infos(c, who.mailbox_owner))
        parents: dict[str, None] = {}
        for info in infos:
            parts = info.name.split(DELIMITER)
            for i in range(1, len(parts)):
                parents[DELIMITER.join(parts[:i])] = None
        nodes = [
            MailboxInfo(
                id=0,
                name=name,
                uidvalidity=0,
                uidnext=0,
                highestmodseq=0,
                messages=0,
                unseen=0,
                selectable=False,
            )
            for name in parents
        ]
        return sorted(infos + nodes, key=_listing_order)

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        if name.upper() == INBOX:
            name = INBOX
        infos: list[MailboxInfo] = self._read(lambda c: self._infos(c, who.mailbox_owner, name))
        if not infos:
            raise NoSuchMailbox(f"No mailbox named {name}")
        return infos[0]

    def _kept_table(self, mailbox_id: int) -> tuple[_BoxKey, EntryTable] | None:
        """The kept entry table if it is still the box's: one statement tells."""

        def peek(cur: Any, mark: str) -> Any:
            cur.execute(
                f"SELECT uidvalidity, highestmodseq, uidnext FROM mailbox WHERE id = {mark}",
                (mailbox_id,),
            )
            return cur.fetchone()

        row = self._read_raw(peek)
        if row is None:
            return None
        key = (int(row[0]), int(row[1]), int(row[2]))
        current = _read_cache(self).current(mailbox_id, key)
        return None if current is None else (key, current)

    async def entries(self, who: Identity, mailbox_id: int) -> EntryTable:
        self._check_owner(who, mailbox_id)
        # A client in sync asks again on every reconnection.
        kept = self._kept_table(mailbox_id)
        if kept is not None:
            return kept[1]

        cache = _read_cache(self)
        if cache.has_table(mailbox_id):

            def run(conn: Connection) -> EntryTable:
                # Brought forward from the kept table: the rows changed since.
                return cache.table(conn, mailbox_id, _box_key(conn, mailbox_id))

            table: EntryTable = self._read(run)
            return table

        def load(conn: Connection) -> tuple[_BoxKey, EntryTable]:
            key = _box_key(conn, mailbox_id)
            return key, _load_table(conn, mailbox_id, key)

        # The whole box (its first SELECT): a row per message, read in a
        # worker thread rather than on the loop every client shares.
        key: _BoxKey
        loaded: EntryTable
        key, loaded = await asyncio.to_thread(self._read, load)
        cache.keep(mailbox_id, key, loaded)
        return loaded

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        self._check_owner(who, mailbox_id)
        wanted = sorted(set(uids))
        kept = self._kept_table(mailbox_id)
        if kept is not None:
            # The usual case, a page of the selected box: flags and modseqs
            # from its current table, the rest (which never changes for a
            # UID of this UIDVALIDITY) kept from earlier pages.
            return self._records_from_table(mailbox_id, kept[0][0], kept[1], wanted)
        return self._joined_records(mailbox_id, wanted)

    def _records_from_table(
        self, mailbox_id: int, uidvalidity: int, table: EntryTable, wanted: list[int]
    ) -> list[MessageRecord]:
        known = _read_cache(self).message_facts(mailbox_id, uidvalidity)
        present: list[tuple[int, int]] = []
        missing: list[int] = []
        table_uids = table.uids
        count = len(table_uids)
        i = 0
        for uid in wanted:  # ascending, and usually a run: one bisection in all
            if i < count and table_uids[i] != uid:
                i = bisect.bisect_left(table_uids, uid, i)
            if i < count and table_uids[i] == uid:
                present.append((uid, i))
                if uid not in known:
                    missing.append(uid)
                i += 1
        if missing:
            for record in self._joined_records(mailbox_id, missing):
                known[record.uid] = record[3:]
        flag_sets, flag_ids, modseqs = table.flag_sets, table.flag_ids, table.modseqs
        out: list[MessageRecord] = []
        for uid, i in present:
            facts = known.get(uid)
            if facts is not None:  # else expunged since the table was read
                out.append(MessageRecord(uid, flag_sets[flag_ids[i]], modseqs[i], *facts))
        return out

    def _joined_records(self, mailbox_id: int, wanted: list[int]) -> list[MessageRecord]:
        def run(cur: Any, mark: str) -> list[MessageRecord]:
            out: list[MessageRecord] = []
            add = out.append
            base = (
                "SELECT e.uid, e.flags, e.modseq, m.internaldate, m.size, m.blob, m.header_size"
                f" FROM entry e JOIN message m ON m.id = e.message_id WHERE e.mailbox_id = {mark}"
            )
            for part in _chunks(wanted):
                lo, hi = part[0], part[-1]
                if hi - lo < 2 * len(part):
                    # A run of UIDs (the usual FETCH n:m): a range on the
                    # primary key, the few UIDs between filtered out below.
                    cur.execute(
                        f"{base} AND e.uid >= {mark} AND e.uid <= {mark} ORDER BY e.uid",
                        (mailbox_id, lo, hi),
                    )
                else:
                    marks = ", ".join([mark] * len(part))
                    cur.execute(
                        f"{base} AND e.uid IN ({marks}) ORDER BY e.uid", (mailbox_id, *part)
                    )
                rows = cur.fetchall()
                if len(rows) > len(part):
                    asked = set(part)
                    rows = [r for r in rows if r[0] in asked]
                for uid, flags, modseq, when, size, blob, hsize in rows:
                    add(
                        MessageRecord(
                            uid, decode_flags(flags), modseq, _utc(when), size, blob, hsize
                        )
                    )
            return out

        return self._read_raw(run)

    def _location(self, sha: str) -> BlobLocation:
        # Where a blob lives never changes while it exists; FETCH of a page of
        # envelopes asks for fifty of them at once.
        where = self._locations.get(sha)
        if where is not None:
            return where

        def find(cur: Any, mark: str) -> Any:
            cur.execute(f'SELECT segment, "offset", length FROM blob WHERE sha256 = {mark}', (sha,))
            return cur.fetchone()

        row = self._read_raw(find)
        if row is None:
            raise NoSuchMailbox("That message is no longer available", reason=f"blob {sha} gone")
        where = BlobLocation(row[0], int(row[1]), int(row[2]))
        if len(self._locations) > 100_000:
            self._locations.clear()
        self._locations[sha] = where
        return where

    async def read(self, blob: str) -> bytes:
        try:
            return await self._read_checked(self._location(blob), blob)
        except BlobCorrupted:
            # A cached location whose bytes were erased since: ask again.
            self._locations.pop(blob, None)
            return await self._read_checked(self._location(blob), blob)

    async def _read_checked(self, where: BlobLocation, blob: str) -> bytes:
        if where.length < _CHECK_APART:
            return self._blobs.read(where, blob)
        # A big message: its checksum, the long part, is computed in a worker
        # thread (hashlib lets go of the interpreter), not on the event loop.
        data = self._blobs.read(where, blob, length=where.length)
        if await asyncio.to_thread(sha256_hex, data) != blob:
            raise BlobCorrupted(f"checksum mismatch for {blob}")
        return data

    def recall(self, blob: str, aspect: str) -> bytes | None:
        return self._memo.recall(blob, aspect)

    def remember(self, blob: str, aspect: str, value: bytes) -> None:
        self._memo.remember(blob, aspect, value)

    def _forget_blob(self, sha: str) -> None:
        self._memo.forget(sha)
        self._locations.pop(sha, None)

    async def read_header(self, blob: str, header_size: int) -> bytes:
        where = self._location(blob)
        data = self._blobs.read(where, blob, length=header_size or where.length)
        if data and not data.strip(b"\0"):
            # Erased bytes: the same message was deleted and sent again since
            # its location was cached. Headers are never all zeros.
            self._locations.pop(blob, None)
            where = self._location(blob)
            data = self._blobs.read(where, blob, length=header_size or where.length)
        return data

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        self._check_owner(who, mailbox_id)
        for flag in flags:
            if not _FLAG_RE.match(flag) or flag.lower() == "\\recent":
                raise CannotDoThat(f"Flag {flag} cannot be stored")
        wanted = sorted(set(uids))

        def work(conn: Connection, ctx: WriteContext) -> StoreResult:
            current: dict[int, tuple[frozenset[str], int, int]] = {}
            for part in _chunks(wanted):
                for r in conn.execute(
                    select(EN.c.uid, EN.c.flags, EN.c.modseq, EN.c.placement_id).where(
                        EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part)
                    )
                ):
                    current[int(r.uid)] = (
                        decode_flags(r.flags),
                        int(r.modseq),
                        int(r.placement_id),
                    )
            modified: list[int] = []
            changes: dict[int, tuple[frozenset[str], int]] = {}
            for uid, (old, modseq, placement) in current.items():
                if unchanged_since is not None and modseq > unchanged_since:
                    modified.append(uid)
                    continue
                if mode is FlagMode.ADD:
                    new = old | flags
                elif mode is FlagMode.REMOVE:
                    new = old - flags
                else:
                    new = flags
                if new != old:
                    changes[uid] = (new, placement)
            if not changes:
                return StoreResult(updated=[], modified=sorted(modified))
            modseq = _bump_modseq(conn, mailbox_id)
            updated: list[Entry] = []
            for uid, (new, placement) in sorted(changes.items()):
                conn.execute(
                    update(EN)
                    .where(EN.c.mailbox_id == mailbox_id, EN.c.uid == uid)
                    .values(flags=encode_flags(new), modseq=modseq)
                )
                updated.append(Entry(uid, new, modseq))
                ctx.events.append(MailboxEvent(mailbox_id, "flags", uid, new, modseq))
                _sync_twins(conn, ctx, placement, mailbox_id, new)
            return StoreResult(updated=updated, modified=sorted(modified))

        return await self._writer.submit(work)

    def _kind_of(self, mailbox_id: int) -> BoxRef:
        row = self._read(
            lambda c: c.execute(select(MB.c.kind, MB.c.dossier).where(MB.c.id == mailbox_id)).one()
        )
        return BoxRef(BoxKind(row.kind), row.dossier)

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        self._check_owner(who, mailbox_id)
        box = self._kind_of(mailbox_id)
        only = set(uids) if uids is not None else None

        def work(conn: Connection, ctx: WriteContext) -> list[int]:
            rows = conn.execute(
                select(EN.c.uid, EN.c.flags).where(
                    EN.c.mailbox_id == mailbox_id,
                    EN.c.flags.like("%\\Deleted%", escape="!"),
                )
            ).all()
            doomed = [
                int(r.uid)
                for r in rows
                if _DELETED in decode_flags(r.flags) and (only is None or int(r.uid) in only)
            ]
            if not doomed:
                return []
            outcome = decide_expunge(box.kind)
            for held in _held(conn, mailbox_id, doomed):
                if outcome is MoveOutcome.PURGE:
                    _drop_placement(conn, ctx, held.placement)
                    continue
                # Deleting outside Supprimés never loses a message: it goes to
                # Supprimés, unless the client already copied it there.
                trashed = conn.execute(
                    select(PL.c.id).where(
                        PL.c.owner == who.mailbox_owner,
                        PL.c.message_id == held.message_id,
                        PL.c.kind == BoxKind.SUPPRIMES.value,
                    )
                ).first()
                if trashed is not None:
                    _remove_entries(conn, ctx, held.placement)
                    conn.execute(delete(PL).where(PL.c.id == held.placement))
                else:
                    _move_placement(
                        conn,
                        ctx,
                        held.placement,
                        BoxKind.SUPPRIMES,
                        held.kind,
                        held.flags - {_DELETED},
                    )
            return sorted(doomed)

        return await self._writer.submit(work)

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        owner = who.mailbox_owner
        box = await self.mailbox(who, mailbox_name)
        ref = self._kind_of(box.id)
        check_append(ref.kind)
        try:
            summary = summarize(data)
        except PalaisError:  # IMAP lets a client store any bytes; index what we can
            summary = MessageSummary(header_size(data), "", "", "", "", "", None, None, True)
        when = (internaldate or datetime.now(UTC)).astimezone(UTC)

        if ref.kind is BoxKind.ENVOYES:
            # The client files its own copy of what it just sent: answer with ours.
            def known(conn: Connection) -> int | None:
                if not summary.message_id:
                    return None
                uid = conn.execute(
                    select(EN.c.uid)
                    .join(MS, MS.c.id == EN.c.message_id)
                    .where(EN.c.mailbox_id == box.id, MS.c.message_id == summary.message_id)
                    .order_by(EN.c.uid.desc())
                    .limit(1)
                ).scalar()
                return None if uid is None else int(uid)

            uid = self._read(known)
            if uid is None:
                raise CannotDoThat("Messages enter Envoyés by being sent, not by APPEND")
            return AppendResult(uidvalidity=box.uidvalidity, uid=uid)

        dossier = ref.dossier or self._read(lambda c: _dossier_from_recipients(c, summary))

        def work(conn: Connection, ctx: WriteContext) -> AppendResult:
            mid, _ = _insert_message(
                conn,
                ctx,
                data,
                summary,
                internaldate=when,
                sender=who.address,
                fingerprint=who.fingerprint,
                dossier_id=None,
            )
            uids = _place(conn, ctx, owner, mid, BoxKind.BROUILLONS, dossier, flags)
            validity = conn.execute(select(MB.c.uidvalidity).where(MB.c.id == box.id)).scalar_one()
            return AppendResult(uidvalidity=int(validity), uid=uids[box.id])

        return await self._writer.submit(work, [data])

    async def _transfer(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str, *, move: bool
    ) -> CopyResult:
        self._check_owner(who, mailbox_id)
        dest_box = await self.mailbox(who, dest_name)
        dest = self._kind_of(dest_box.id)

        def work(conn: Connection, ctx: WriteContext) -> CopyResult:
            src_uids: list[int] = []
            dst_uids: list[int] = []
            for held in _held(conn, mailbox_id, uids):
                if dest.dossier is not None and dest.dossier != held.dossier:
                    raise CannotDoThat("That message belongs to another dossier")
                outcome = decide_move(held.kind, held.origin, dest.kind)
                keep = held.flags - {_DELETED}
                if outcome is MoveOutcome.PURGE:
                    if move:
                        _drop_placement(conn, ctx, held.placement)
                    continue
                new_kind = dest.kind
                origin = held.kind if outcome is MoveOutcome.DELETE else None
                if move:
                    placed = _move_placement(conn, ctx, held.placement, new_kind, origin, keep)
                else:
                    placed = _place(
                        conn,
                        ctx,
                        who.mailbox_owner,
                        held.message_id,
                        new_kind,
                        held.dossier,
                        keep,
                        origin,
                    )
                if dest_box.id in placed:
                    src_uids.append(held.uid)
                    dst_uids.append(placed[dest_box.id])
            return CopyResult(dest_box.uidvalidity, src_uids, dst_uids)

        return await self._writer.submit(work)

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._transfer(who, mailbox_id, uids, dest_name, move=False)

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._transfer(who, mailbox_id, uids, dest_name, move=True)

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        self._check_owner(who, mailbox_id)
        column = {
            HeaderField.SUBJECT: MS.c.subject,
            HeaderField.FROM: MS.c.from_addr,
            HeaderField.TO: MS.c.to_addr,
            HeaderField.CC: MS.c.cc_addr,
            HeaderField.BCC: MS.c.bcc_addr,
            HeaderField.MESSAGE_ID: MS.c.message_id,
        }[field]
        pattern = (
            "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        cache = _read_cache(self)

        def run(conn: Connection) -> set[int]:
            if conn.dialect.name != "sqlite":
                rows = conn.execute(
                    select(EN.c.uid)
                    .join(MS, MS.c.id == EN.c.message_id)
                    .where(
                        EN.c.mailbox_id == mailbox_id, func.lower(column).like(pattern, escape="\\")
                    )
                ).scalars()
                return {int(u) for u in rows}
            # SQLite's LIKE ignores ASCII case and its lower() folds nothing
            # else: the same test without lower(). A box holding a good part
            # of all messages is searched message table first (one scan of it,
            # then the entries of the hits) rather than by a lookup per entry.
            cur, mark = _driver(conn)
            try:
                size = cache.messages_hint(mailbox_id)
                if size is None:
                    cur.execute(
                        f"SELECT count(*) FROM entry WHERE mailbox_id = {mark}", (mailbox_id,)
                    )
                    size = int(cur.fetchone()[0])
                cur.execute("SELECT max(id) FROM message")
                total = int(cur.fetchone()[0] or 0)
                matching = f"SELECT id FROM message WHERE {column.name} LIKE {mark} ESCAPE '\\'"
                if size * 4 >= total:
                    # "+mailbox_id": no index on the box, so the hits' entries
                    # are found through the message_id index.
                    sql = (
                        f"SELECT uid FROM entry WHERE +mailbox_id = {mark}"
                        f" AND message_id IN ({matching})"
                    )
                else:
                    sql = (
                        "SELECT e.uid FROM entry e JOIN message m ON m.id = e.message_id"
                        f" WHERE e.mailbox_id = {mark}"
                        f" AND m.{column.name} LIKE {mark} ESCAPE '\\'"
                    )
                cur.execute(sql, (mailbox_id, pattern))
                return {int(r[0]) for r in cur}
            finally:
                cur.close()

        # A scan of the box's messages: in a thread (SQLite and PostgreSQL's
        # drivers let go of the interpreter while they work), not on the loop
        # that serves every other client.
        found: set[int] = await asyncio.to_thread(self._read, run)
        return found

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        self._check_owner(who, mailbox_id)
        conds = [EN.c.mailbox_id == mailbox_id, MS.c.sent_date.is_not(None)]
        # Dates compare in UTC here; the header's own zone may shift a message
        # by a day near midnight, as Dovecot also does for SENT* keys.
        if since is not None:
            conds.append(MS.c.sent_date >= datetime.combine(since, time(), tzinfo=UTC))
        if before is not None:
            conds.append(MS.c.sent_date < datetime.combine(before, time(), tzinfo=UTC))
        rows = await asyncio.to_thread(
            self._read,
            lambda c: (
                c.execute(select(EN.c.uid).join(MS, MS.c.id == EN.c.message_id).where(and_(*conds)))
                .scalars()
                .all()
            ),
        )
        return {int(u) for u in rows}

    def subscribe(self, mailbox_id: int, listener: Callable[[MailboxEvent], None]) -> Unsubscribe:
        return self._hub.subscribe(mailbox_id, listener)

    # -- delivery ------------------------------------------------------------

    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
        *,
        resend_since: datetime | None = None,
    ) -> FiledMessage:
        """Store an accepted message in every box of the plan; durable on return.

        A draft of the sender's with the same Message-ID has now been sent:
        it leaves Brouillons. With ``resend_since``, the same message filed
        by the same sender since then is returned instead (``resent``), in
        the same transaction: the writer runs one job at a time, and on
        PostgreSQL a lock on (sender, Message-ID) keeps other nodes out.
        """
        dossier_id: int | None = None
        if plan.dossier is not None:
            dossier_id = self._dossier_ids.get(plan.dossier)
            if dossier_id is None:
                dossier_id = self._read(
                    lambda c: c.execute(select(DO.c.id).where(DO.c.number == plan.dossier)).scalar()
                )
                if dossier_id is not None:
                    self._dossier_ids[plan.dossier] = dossier_id
        now = datetime.now(UTC)

        def work(conn: Connection, ctx: WriteContext) -> FiledMessage:
            # Whether any message has this Message-ID yet: if none, there
            # is no draft to look for either (None: not asked).
            known: bool | None = None
            if resend_since is not None and summary.message_id:
                sha = ctx.sha256(data)
                held = {(d.owner, d.kind.value) for d in plan.destinations}
                first, known = _filed_since(
                    conn, who.address, summary.message_id, sha, resend_since, held
                )
                if first is not None:
                    return FiledMessage(first, sha, len(data), {}, resent=True)
            mid, sha = _insert_message(
                conn,
                ctx,
                data,
                summary,
                internaldate=now,
                sender=who.address,
                fingerprint=who.fingerprint,
                dossier_id=dossier_id,
            )
            if summary.message_id and known is not False:
                cur = rows_for(conn)
                draft_rows = cur.all(
                    # Through the Message-ID index first: the sender's placements grow.
                    "SELECT id FROM placement WHERE message_id IN"
                    " (SELECT id FROM message WHERE message_id = ?) AND owner = ? AND kind = ?",
                    (summary.message_id, who.mailbox_owner, BoxKind.BROUILLONS.value),
                )
                drafts = [r[0] for r in draft_rows]
                for draft in drafts:
                    _drop_placement(conn, ctx, int(draft))
            uids: dict[str, int] = {}
            holders = [(d.owner, d.kind, d.flags) for d in plan.destinations]
            placed_all = _place_all(conn, ctx, mid, plan.dossier, holders)
            for dest, placed in zip(plan.destinations, placed_all, strict=True):
                for uid in placed.values():
                    uids.setdefault(f"{dest.owner}/{dest.kind.value}", uid)
            return FiledMessage(mid, sha, len(data), uids)

        return await self._writer.submit(work, [data])


def _filed_since(
    conn: Connection,
    sender: str,
    message_id: str,
    sha: str,
    since: datetime,
    held: set[tuple[str, str]],
) -> tuple[int | None, bool]:
    """The first message ``sender`` filed with this Message-ID and these bytes
    since ``since`` that every (owner, box kind) of ``held`` holds, and
    whether any message has this Message-ID at all.

    Only filings count: they alone have a dossier (drafts and imports have
    none). A filing that did not reach all of ``held`` is no answer: a
    client told "452 4.5.3 Too many recipients" sends the same message to
    the others in a second transaction, which must be filed. One statement
    through the Message-ID index; a new Message-ID (the usual case) finds no
    row, and then the filing needs no draft look-up, so a resend check costs
    no statement. On PostgreSQL the transaction first takes a lock on
    (sender, Message-ID), held until it commits, so that a twin filing on
    another node waits and then sees this one.
    """
    rows = rows_for(conn)
    if conn.dialect.name == "postgresql":
        rows.run(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"{sender} {message_id}",)
        )
    found = rows.all(
        "SELECT id, CASE WHEN sender = ? AND blob = ? AND internaldate >= ?"
        " AND dossier_id IS NOT NULL THEN 1 ELSE 0 END FROM message WHERE message_id = ?"
        " ORDER BY id",
        (sender, sha, _when(conn, since), message_id),
    )
    owners = sorted({owner for owner, _ in held})
    for mid, same in found:
        if not same:
            continue
        placed = rows.all(
            # Through the (owner, message_id) index.
            f"SELECT owner, kind FROM placement WHERE owner IN ({', '.join('?' * len(owners))})"
            " AND message_id = ?",
            (*owners, mid),
        )
        if held <= {(owner, kind) for owner, kind in placed}:
            return int(mid), True
    return None, bool(found)


def _sync_twins(
    conn: Connection, ctx: WriteContext, placement: int, except_box: int, flags: frozenset[str]
) -> None:
    """A flag set in one view is set in the other view of the same placement."""
    twins = conn.execute(
        select(EN.c.mailbox_id, EN.c.uid).where(
            EN.c.placement_id == placement, EN.c.mailbox_id != except_box
        )
    ).all()
    for t in twins:
        modseq = _bump_modseq(conn, t.mailbox_id)
        conn.execute(
            update(EN)
            .where(EN.c.mailbox_id == t.mailbox_id, EN.c.uid == t.uid)
            .values(flags=encode_flags(flags), modseq=modseq)
        )
        ctx.events.append(MailboxEvent(int(t.mailbox_id), "flags", int(t.uid), flags, modseq))


def _dossier_from_recipients(conn: Connection, summary: MessageSummary) -> str | None:
    """A draft saved in a global view belongs to the dossier it is written to."""
    text = " ".join((summary.to_addr, summary.cc_addr)).lower()
    for addr in re.findall(r"[\w.+-]+@[\w.-]+", text):
        number = conn.execute(select(DO.c.number).where(DO.c.address == addr)).scalar()
        if number is not None:
            return str(number)
    found = NUMBER_IN_TEXT.search(summary.subject)
    return found.group(1) if found else None


def _listing_order(info: MailboxInfo) -> tuple[int, str]:
    order = {ref.name: i for i, ref in enumerate(GLOBAL_BOXES)}
    return (order.get(info.name, len(order)), info.name)


# -- the read side's memory of big boxes -----------------------------------------

# uidvalidity, highestmodseq, uidnext of a box. Every change to a box's
# entries moves its highestmodseq (CONDSTORE needs it), in the same commit,
# whichever process makes it: what was read at one key holds while the
# mailbox row still shows that key.
_BoxKey = tuple[int, int, int]

# Entries kept over all cached tables (about 14 bytes each).
_TABLE_BUDGET = 2_000_000
# Past this many changed entries, reading the whole box again is cheaper.
_REFRESH_LIMIT = 20_000
# Bound on the boxes whose bare counts are remembered.
_COUNTS_LIMIT = 100_000
# Bound on the entries whose message facts are kept (about 200 bytes each).
_FACTS_BUDGET = 50_000
_Facts = tuple[datetime, int, str, int]


class _ReadCache:
    """Entry tables of recently selected boxes, and counts of others, by key.

    A table whose key is behind is brought forward from the entries with a
    higher modseq (an index read) rather than read again: a new message or a
    flag change costs a few rows, not the box. Tables are never modified in
    place (sessions may hold them); bringing one forward builds a new one.
    """

    __slots__ = ("counts", "facts", "tables")

    def __init__(self) -> None:
        self.tables: OrderedDict[int, tuple[_BoxKey, EntryTable]] = OrderedDict()
        self.counts: dict[int, tuple[_BoxKey, int, int]] = {}
        self.facts: OrderedDict[int, tuple[int, dict[int, _Facts]]] = OrderedDict()

    def message_facts(self, box_id: int, uidvalidity: int) -> dict[int, _Facts]:
        """What never changes of a box's entries (date, size, blob, header size), by UID.

        A UID names one message for as long as the box keeps its UIDVALIDITY;
        an expunged UID is never given again, and the table says which exist.
        """
        kept = self.facts.get(box_id)
        if kept is None or kept[0] != uidvalidity:
            kept = self.facts[box_id] = (uidvalidity, {})
        self.facts.move_to_end(box_id)
        total = sum(len(f) for _, f in self.facts.values())
        while total > _FACTS_BUDGET and len(self.facts) > 1:
            _, (_, dropped) = self.facts.popitem(last=False)
            total -= len(dropped)
        if len(kept[1]) > _FACTS_BUDGET:
            kept[1].clear()
        return kept[1]

    def has_table(self, box_id: int) -> bool:
        return box_id in self.tables

    def counts_for(self, box_id: int, key: _BoxKey) -> tuple[int, int] | None:
        known = self.counts.get(box_id)
        if known is None or known[0] != key:
            return None
        return known[1], known[2]

    def messages_hint(self, box_id: int) -> int | None:
        """The box's message count when last seen (perhaps not current)."""
        known = self.counts.get(box_id)
        return None if known is None else known[1]

    def remember_counts(self, box_id: int, key: _BoxKey, messages: int, unseen: int) -> None:
        if len(self.counts) >= _COUNTS_LIMIT:
            self.counts.clear()
        self.counts[box_id] = (key, messages, unseen)

    def current(self, box_id: int, key: _BoxKey) -> EntryTable | None:
        """The kept table if it is the box's at ``key``."""
        cached = self.tables.get(box_id)
        if cached is None or cached[0] != key:
            return None
        self.tables.move_to_end(box_id)
        return cached[1]

    def table(self, conn: Connection, box_id: int, key: _BoxKey) -> EntryTable:
        """The box's entries at ``key``; ``conn`` must have read ``key`` in its transaction."""
        cached = self.tables.get(box_id)
        table: EntryTable | None = None
        if cached is not None:
            old_key, old = cached
            if old_key == key:
                self.tables.move_to_end(box_id)
                return old
            if old_key[0] == key[0] and old_key[1] < key[1]:
                table = _advance_table(conn, box_id, old, old_key[1], key)
        if table is None:
            table = _load_table(conn, box_id, key)
        self._keep(box_id, key, table)
        return table

    def keep(self, box_id: int, key: _BoxKey, table: EntryTable) -> None:
        """Keep a table read elsewhere (a worker thread); on the loop, as every change here."""
        self._keep(box_id, key, table)

    def _keep(self, box_id: int, key: _BoxKey, table: EntryTable) -> None:
        self.tables[box_id] = (key, table)
        self.tables.move_to_end(box_id)
        self.remember_counts(box_id, key, len(table), table.unseen)
        total = sum(len(t) for _, t in self.tables.values())
        while total > _TABLE_BUDGET and len(self.tables) > 1:
            _, (_, dropped) = self.tables.popitem(last=False)
            total -= len(dropped)


_READ_CACHES: weakref.WeakKeyDictionary[MailStore, _ReadCache] = weakref.WeakKeyDictionary()


def _read_cache(store: MailStore) -> _ReadCache:
    cache = _READ_CACHES.get(store)
    if cache is None:
        cache = _READ_CACHES[store] = _ReadCache()
    return cache


def _utc(value: datetime | str) -> datetime:
    """A stored timestamp as an aware datetime (SQLite keeps text, without zone: UTC)."""
    if isinstance(value, str):
        try:
            # Parsing the zone costs far less than replace(tzinfo=...) afterwards.
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # the text had a zone of its own
            value = datetime.fromisoformat(value)
    # PostgreSQL answers in the session's TimeZone: the same instant, in UTC as on SQLite.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _driver(conn: Connection) -> tuple[Any, str]:
    """A DB-API cursor in ``conn``'s transaction, and its parameter mark.

    Whole-box reads go straight to the driver: for 100,000 rows SQLAlchemy's
    result layer costs several times the query.
    """
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return conn.connection.dbapi_connection.cursor(), mark  # type: ignore[union-attr]


def _box_key(conn: Connection, mailbox_id: int) -> _BoxKey:
    # The mailbox row first: it opens the read transaction, so the entries
    # read next are those of this very key.
    row = conn.execute(
        select(MB.c.uidvalidity, MB.c.highestmodseq, MB.c.uidnext).where(MB.c.id == mailbox_id)
    ).first()
    if row is None:
        raise NoSuchMailbox(reason=f"box {mailbox_id} is gone")
    return (int(row.uidvalidity), int(row.highestmodseq), int(row.uidnext))


def _load_table(conn: Connection, box_id: int, key: _BoxKey) -> EntryTable:
    cur, mark = _driver(conn)
    try:
        cur.execute(
            f"SELECT uid, flags, modseq FROM entry WHERE mailbox_id = {mark} ORDER BY uid",
            (box_id,),
        )
        uids: array[int] = array("I")
        modseqs: array[int] = array("Q")
        texts: list[str] = []
        add_uid, add_modseq, add_text = uids.append, modseqs.append, texts.append
        for uid, text, modseq in cur:
            add_uid(uid)
            add_text(text)
            add_modseq(modseq)
    finally:
        cur.close()
    seen = Counter(texts)
    distinct = list(seen)
    position = {text: i for i, text in enumerate(distinct)}
    return EntryTable(
        uids,
        modseqs,
        flag_id_array(map(position.__getitem__, texts), len(distinct)),
        [decode_flags(t) for t in distinct],
        [seen[t] for t in distinct],
        highestmodseq=key[1],
        uidnext=key[2],
    )


def _advance_table(
    conn: Connection, box_id: int, old: EntryTable, since: int, key: _BoxKey
) -> EntryTable | None:
    """``old`` (read at modseq ``since``) brought to ``key``; None: read the box again."""
    cur, mark = _driver(conn)
    try:
        cur.execute(
            "SELECT uid, flags, modseq FROM entry"
            f" WHERE mailbox_id = {mark} AND modseq > {mark} ORDER BY uid",
            (box_id, since),
        )
        changed = cur.fetchmany(_REFRESH_LIMIT + 1)
        if len(changed) > _REFRESH_LIMIT:
            return None
        cur.execute(f"SELECT count(*) FROM entry WHERE mailbox_id = {mark}", (box_id,))
        (present,) = cur.fetchone()
        uids, modseqs, fids = old.uids[:], old.modseqs[:], old.flag_ids[:]
        sets, counts = list(old.flag_sets), list(old.counts)
        position = {flags: i for i, flags in enumerate(sets)}
        for uid, text, modseq in changed:
            flags = decode_flags(text)
            fid = position.get(flags)
            if fid is None:
                fid = position[flags] = len(sets)
                sets.append(flags)
                counts.append(0)
                if fid > 0xFFFF and fids.typecode == "H":
                    fids = array("I", fids)
            i = bisect.bisect_left(uids, uid)
            if i < len(uids) and uids[i] == uid:
                counts[fids[i]] -= 1
                fids[i] = fid
                modseqs[i] = modseq
            else:  # new entries have the highest UIDs: this appends
                uids.insert(i, uid)
                fids.insert(i, fid)
                modseqs.insert(i, modseq)
            counts[fid] += 1
        if len(uids) != int(present):
            # Expunged entries leave no row behind: find them by difference.
            cur.execute(f"SELECT uid FROM entry WHERE mailbox_id = {mark} ORDER BY uid", (box_id,))
            still = {int(r[0]) for r in cur}
            gone = [i for i, uid in enumerate(uids) if uid not in still]
            if len(uids) - len(gone) != len(still):
                return None  # rows we have not seen: concurrent changes, start over
            for i in reversed(gone):
                counts[fids[i]] -= 1
                del uids[i], fids[i], modseqs[i]
    finally:
        cur.close()
    return EntryTable(uids, modseqs, fids, sets, counts, highestmodseq=key[1], uidnext=key[2])
