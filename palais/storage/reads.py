"""The read side of the mail store: boxes, entries, records, bytes and searches.

Reads run on the event loop (one short statement, often on the driver
directly) or, for a whole box, in a worker thread; none of them waits for
the writer.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, and_, case, func, select

from palais.mailbox.boxes import GLOBAL_BOXES, BoxRef, is_inbox
from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.identity import Identity
from palais.mailbox.model import (
    DELIMITER,
    INBOX,
    BoxKind,
    HeaderField,
    MailboxEvent,
    MailboxInfo,
    MessageRecord,
    SpecialUse,
)
from palais.mailbox.ports import BlobLocation, EntryTable, EventBus, MessageBytes, Unsubscribe
from palais.mailbox.searchtext import indexable
from palais.storage import caches, textindex
from palais.storage.blobs import BlobCorrupted, sha256_hex
from palais.storage.caches import BoxKey, box_key, read_cache
from palais.storage.memo import Memo
from palais.storage.schema import Vanished, table
from palais.storage.sql import EN, EVIDENCE_SEGMENT, MB, MS, chunks, decode_flags, driver, utc

VN = table(Vanished)

T = TypeVar("T")
# Messages from this size on are checked against their SHA-256 off the event
# loop: hashing a few MiB would hold every other client for milliseconds.
_CHECK_APART = 1024 * 1024


class MailReads:
    """The reads of ``palais.mailbox.ports.MailAccess`` on SQL plus the blob store."""

    def __init__(self, reader: Engine, blobs: MessageBytes, hub: EventBus) -> None:
        self._reader = reader
        self._blobs = blobs
        self._hub = hub
        self._owners: dict[int, str] = {}
        self._locations: dict[str, BlobLocation] = {}
        self._memo = Memo()
        self._mark = "?" if reader.dialect.paramstyle == "qmark" else "%s"
        self._sqlite = reader.dialect.name == "sqlite"
        self._own = threading.local()
        self._own_conns: list[Any] = []

    # -- helpers -------------------------------------------------------------

    @property
    def reader(self) -> Engine:
        """The read-only engine (other stores' queries made beside the mail's)."""
        return self._reader

    def _read(self, fn: Callable[[Connection], Any]) -> Any:
        with self._reader.connect() as conn:
            return fn(conn)

    # A read never holds the event loop on a database server: there a
    # statement is a network round trip, and every session would wait for it.
    # SQLite runs in this process, a WAL reader waits for no writer, and its
    # small statements take microseconds, less than a hop to a worker thread
    # would cost every FETCH: those stay on the loop. Reads that scan a box
    # go to a thread on both (search_header, search_sent, a first table load).

    async def _query(self, fn: Callable[[Connection], T]) -> T:
        if self._sqlite:
            result: T = self._read(fn)
            return result
        return await asyncio.to_thread(self._read, fn)

    async def _query_raw(self, fn: Callable[[Any, str], T]) -> T:
        if self._sqlite:
            return self._read_raw(fn)
        return await asyncio.to_thread(self._read_raw, fn)

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

    async def _check_owner(self, who: Identity, mailbox_id: int) -> None:
        owner = self._owners.get(mailbox_id)
        if owner is None:
            owner = await self._query(
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
        cache = read_cache(self)
        counts: dict[int, tuple[int, int]] = {}
        keys: dict[int, BoxKey] = {}
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

    # -- MailAccess: reads -------------------------------------------------

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        infos: list[MailboxInfo] = await self._query(lambda c: self._infos(c, who.mailbox_owner))
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
        if is_inbox(name):
            name = INBOX
        infos: list[MailboxInfo] = await self._query(
            lambda c: self._infos(c, who.mailbox_owner, name)
        )
        if not infos:
            raise NoSuchMailbox(f"No mailbox named {name}")
        return infos[0]

    async def _kept_table(self, mailbox_id: int) -> tuple[BoxKey, EntryTable] | None:
        """The kept entry table if it is still the box's: one statement tells."""

        def peek(cur: Any, mark: str) -> Any:
            cur.execute(
                f"SELECT uidvalidity, highestmodseq, uidnext FROM mailbox WHERE id = {mark}",
                (mailbox_id,),
            )
            return cur.fetchone()

        row = await self._query_raw(peek)
        if row is None:
            return None
        key = (int(row[0]), int(row[1]), int(row[2]))
        current = read_cache(self).current(mailbox_id, key)
        return None if current is None else (key, current)

    async def entries(self, who: Identity, mailbox_id: int) -> EntryTable:
        await self._check_owner(who, mailbox_id)
        # A client in sync asks again on every reconnection.
        kept = await self._kept_table(mailbox_id)
        if kept is not None:
            return kept[1]

        cache = read_cache(self)
        if cache.has_table(mailbox_id):

            def run(conn: Connection) -> EntryTable:
                # Brought forward from the kept table: the rows changed since.
                return cache.table(conn, mailbox_id, box_key(conn, mailbox_id))

            table: EntryTable = await self._query(run)
            return table

        def load(conn: Connection) -> tuple[BoxKey, EntryTable]:
            key = box_key(conn, mailbox_id)
            return key, caches.load_table(conn, mailbox_id, key)

        # The whole box (its first SELECT): a row per message, read in a
        # worker thread rather than on the loop every client shares.
        key: BoxKey
        loaded: EntryTable
        key, loaded = await asyncio.to_thread(self._read, load)
        cache.keep(mailbox_id, key, loaded)
        return loaded

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        await self._check_owner(who, mailbox_id)
        wanted = sorted(set(uids))
        kept = await self._kept_table(mailbox_id)
        if kept is not None:
            # The usual case, a page of the selected box: flags and modseqs
            # from its current table, the rest (which never changes for a
            # UID of this UIDVALIDITY) kept from earlier pages.
            return await self._records_from_table(mailbox_id, kept[0][0], kept[1], wanted)
        return await self._joined_records(mailbox_id, wanted)

    async def _records_from_table(
        self, mailbox_id: int, uidvalidity: int, table: EntryTable, wanted: list[int]
    ) -> list[MessageRecord]:
        known = read_cache(self).message_facts(mailbox_id, uidvalidity)
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
            for record in await self._joined_records(mailbox_id, missing):
                known[record.uid] = record[3:]
        flag_sets, flag_ids, modseqs = table.flag_sets, table.flag_ids, table.modseqs
        out: list[MessageRecord] = []
        for uid, i in present:
            facts = known.get(uid)
            if facts is not None:  # else expunged since the table was read
                out.append(MessageRecord(uid, flag_sets[flag_ids[i]], modseqs[i], *facts))
        return out

    async def _joined_records(self, mailbox_id: int, wanted: list[int]) -> list[MessageRecord]:
        def run(cur: Any, mark: str) -> list[MessageRecord]:
            out: list[MessageRecord] = []
            add = out.append
            base = (
                "SELECT e.uid, e.flags, e.modseq, m.internaldate, m.size, m.blob, m.header_size"
                f" FROM entry e JOIN message m ON m.id = e.message_id WHERE e.mailbox_id = {mark}"
            )
            for part in chunks(wanted):
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
                # Filtered unless the range holds nothing but the UIDs asked:
                # counting the rows is not enough, an asked UID expunged
                # meanwhile would leave room for an unasked neighbour.
                if hi - lo + 1 != len(part):
                    asked = set(part)
                    rows = [r for r in rows if r[0] in asked]
                for uid, flags, modseq, when, size, blob, hsize in rows:
                    add(
                        MessageRecord(
                            uid, decode_flags(flags), modseq, utc(when), size, blob, hsize
                        )
                    )
            return out

        return await self._query_raw(run)

    async def _location(self, sha: str) -> BlobLocation:
        # Where a blob lives never changes while it exists; FETCH of a page of
        # envelopes asks for fifty of them at once.
        where = self._locations.get(sha)
        if where is not None:
            return where

        def find(cur: Any, mark: str) -> Any:
            cur.execute(f'SELECT segment, "offset", length FROM blob WHERE sha256 = {mark}', (sha,))
            return cur.fetchone()

        row = await self._query_raw(find)
        if row is None:
            raise NoSuchMailbox("That message is no longer available", reason=f"blob {sha} gone")
        where = BlobLocation(row[0], int(row[1]), int(row[2]))
        if len(self._locations) > 100_000:
            self._locations.clear()
        self._locations[sha] = where
        return where

    async def _receipt(self, where: BlobLocation) -> bytes:
        """A receipt mail's bytes, kept in the evidence log's row."""

        def find(cur: Any, mark: str) -> Any:
            cur.execute(
                f"SELECT receipt FROM evidence_log WHERE position = {mark}", (where.offset,)
            )
            return cur.fetchone()

        row = await self._query_raw(find)
        if row is None:  # pragma: no cover - the log is append-only
            raise NoSuchMailbox("That message is no longer available", reason="receipt gone")
        return bytes(row[0])

    async def read(self, blob: str) -> bytes:
        where = await self._location(blob)
        if where.segment == EVIDENCE_SEGMENT:
            return await self._receipt(where)
        try:
            return await self._read_checked(where, blob)
        except BlobCorrupted:
            # A cached location whose bytes were erased since: ask again.
            self._locations.pop(blob, None)
            return await self._read_checked(await self._location(blob), blob)

    async def _bytes(self, where: BlobLocation, blob: str, length: int | None = None) -> bytes:
        # Bytes in a local pack are a pread away; in the database (several
        # nodes: palais.storage.pg_blobs) a round trip, kept off the loop.
        if getattr(self._blobs, "local", True):
            return self._blobs.read(where, blob, length=length)
        return await asyncio.to_thread(self._blobs.read, where, blob, length=length)

    async def _read_checked(self, where: BlobLocation, blob: str) -> bytes:
        if where.length < _CHECK_APART:
            return await self._bytes(where, blob)
        # A big message: its checksum, the long part, is computed in a worker
        # thread (hashlib lets go of the interpreter), not on the event loop.
        data = await self._bytes(where, blob, length=where.length)
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
        where = await self._location(blob)
        if where.segment == EVIDENCE_SEGMENT:
            return (await self._receipt(where))[: header_size or where.length]
        try:
            data = await self._bytes(where, blob, header_size or where.length)
        except BlobCorrupted:  # in the database: the object was unlinked since
            data = b""
        if not data or not data.strip(b"\0"):
            # Erased bytes: the same message was deleted and sent again since
            # its location was cached. Headers are never all zeros.
            self._locations.pop(blob, None)
            where = await self._location(blob)
            data = await self._bytes(where, blob, header_size or where.length)
        return data

    async def _kind_of(self, mailbox_id: int) -> BoxRef:
        row = await self._query(
            lambda c: c.execute(select(MB.c.kind, MB.c.dossier).where(MB.c.id == mailbox_id)).one()
        )
        return BoxRef(BoxKind(row.kind), row.dossier)

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        await self._check_owner(who, mailbox_id)
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
        cache = read_cache(self)

        def run(conn: Connection) -> set[int]:
            if field is HeaderField.SUBJECT:
                hits = textindex.subject_hits(conn, mailbox_id, text, pattern)
                if hits is not None:
                    return hits
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
            cur, mark = driver(conn)
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

    async def search_text(
        self, who: Identity, mailbox_id: int, part: str, needle: str
    ) -> set[int] | None:
        await self._check_owner(who, mailbox_id)
        if part not in ("header", "body", "text") or not indexable(needle):
            return None
        where = cast(textindex.Part, part)
        # An index lookup, then the hits' entries: in a thread on both
        # databases, as a search of many hits is a read of many rows.
        found: set[int] | None = await asyncio.to_thread(
            self._read, lambda c: textindex.candidates(c, mailbox_id, where, needle)
        )
        return found

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        await self._check_owner(who, mailbox_id)
        conds = [EN.c.mailbox_id == mailbox_id, MS.c.sent_day.is_not(None)]
        # The Date header's own day, time and zone left out (RFC 3501 6.4.4):
        # "25 Mar 2007 00:00 +0200" is SENTON 25-Mar-2007.
        if since is not None:
            conds.append(MS.c.sent_day >= since)
        if before is not None:
            conds.append(MS.c.sent_day < before)
        rows = await asyncio.to_thread(
            self._read,
            lambda c: (
                c.execute(select(EN.c.uid).join(MS, MS.c.id == EN.c.message_id).where(and_(*conds)))
                .scalars()
                .all()
            ),
        )
        return {int(u) for u in rows}

    async def vanished(self, who: Identity, mailbox_id: int, since: int) -> list[int]:
        await self._check_owner(who, mailbox_id)
        query = (
            select(VN.c.uid)
            .where(VN.c.mailbox_id == mailbox_id, VN.c.modseq > since)
            .order_by(VN.c.uid)
        )
        rows = await self._query(lambda c: c.execute(query).scalars().all())
        return [int(u) for u in rows]

    async def box_size(self, who: Identity, mailbox_id: int) -> int:
        await self._check_owner(who, mailbox_id)
        query = (
            select(func.coalesce(func.sum(MS.c.size), 0))
            .select_from(EN.join(MS, MS.c.id == EN.c.message_id))
            .where(EN.c.mailbox_id == mailbox_id)
        )
        return int(await self._query(lambda c: c.execute(query).scalar_one()))

    def subscribe(self, mailbox_id: int, listener: Callable[[MailboxEvent], None]) -> Unsubscribe:
        return self._hub.subscribe(mailbox_id, listener)


def _listing_order(info: MailboxInfo) -> tuple[int, str]:
    order = {ref.name: i for i, ref in enumerate(GLOBAL_BOXES)}
    return (order.get(info.name, len(order)), info.name)
