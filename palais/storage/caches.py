"""The read side's memory of big boxes: entry tables and counts, kept by box key.

Every change to a box's entries moves its highestmodseq (CONDSTORE needs it)
in the same commit, whichever process makes it: what was read at one key
holds while the mailbox row still shows that key.
"""

from __future__ import annotations

import bisect
import weakref
from array import array
from collections import Counter, OrderedDict
from datetime import datetime

from sqlalchemy import Connection, select

from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.ports import EntryTable, flag_id_array
from palais.storage.sql import MB, decode_flags, driver

# uidvalidity, highestmodseq, uidnext of a box.
BoxKey = tuple[int, int, int]

# Entries kept over all cached tables (about 14 bytes each).
_TABLE_BUDGET = 2_000_000
# Past this many changed entries, reading the whole box again is cheaper.
_REFRESH_LIMIT = 20_000
# Bound on the boxes whose bare counts are remembered.
_COUNTS_LIMIT = 100_000
# Bound on the entries whose message facts are kept (about 200 bytes each).
_FACTS_BUDGET = 50_000
_Facts = tuple[datetime, int, str, int]


class ReadCache:
    """Entry tables of recently selected boxes, and counts of others, by key.

    A table whose key is behind is brought forward from the entries with a
    higher modseq (an index read) rather than read again: a new message or a
    flag change costs a few rows, not the box. Tables are never modified in
    place (sessions may hold them); bringing one forward builds a new one.
    """

    __slots__ = ("counts", "facts", "tables")

    def __init__(self) -> None:
        self.tables: OrderedDict[int, tuple[BoxKey, EntryTable]] = OrderedDict()
        self.counts: dict[int, tuple[BoxKey, int, int]] = {}
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

    def counts_for(self, box_id: int, key: BoxKey) -> tuple[int, int] | None:
        known = self.counts.get(box_id)
        if known is None or known[0] != key:
            return None
        return known[1], known[2]

    def messages_hint(self, box_id: int) -> int | None:
        """The box's message count when last seen (perhaps not current)."""
        known = self.counts.get(box_id)
        return None if known is None else known[1]

    def remember_counts(self, box_id: int, key: BoxKey, messages: int, unseen: int) -> None:
        if len(self.counts) >= _COUNTS_LIMIT:
            self.counts.clear()
        self.counts[box_id] = (key, messages, unseen)

    def current(self, box_id: int, key: BoxKey) -> EntryTable | None:
        """The kept table if it is the box's at ``key``."""
        cached = self.tables.get(box_id)
        if cached is None or cached[0] != key:
            return None
        self.tables.move_to_end(box_id)
        return cached[1]

    def table(self, conn: Connection, box_id: int, key: BoxKey) -> EntryTable:
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
            table = load_table(conn, box_id, key)
        self._keep(box_id, key, table)
        return table

    def keep(self, box_id: int, key: BoxKey, table: EntryTable) -> None:
        """Keep a table read elsewhere (a worker thread); on the loop, as every change here."""
        self._keep(box_id, key, table)

    def _keep(self, box_id: int, key: BoxKey, table: EntryTable) -> None:
        self.tables[box_id] = (key, table)
        self.tables.move_to_end(box_id)
        self.remember_counts(box_id, key, len(table), table.unseen)
        total = sum(len(t) for _, t in self.tables.values())
        while total > _TABLE_BUDGET and len(self.tables) > 1:
            _, (_, dropped) = self.tables.popitem(last=False)
            total -= len(dropped)


_READ_CACHES: weakref.WeakKeyDictionary[object, ReadCache] = weakref.WeakKeyDictionary()


def read_cache(store: object) -> ReadCache:
    """The read cache of one store (shared by its sessions, on the event loop)."""
    cache = _READ_CACHES.get(store)
    if cache is None:
        cache = _READ_CACHES[store] = ReadCache()
    return cache


def box_key(conn: Connection, mailbox_id: int) -> BoxKey:
    # The mailbox row first: it opens the read transaction, so the entries
    # read next are those of this very key.
    row = conn.execute(
        select(MB.c.uidvalidity, MB.c.highestmodseq, MB.c.uidnext).where(MB.c.id == mailbox_id)
    ).first()
    if row is None:
        raise NoSuchMailbox(reason=f"box {mailbox_id} is gone")
    return (int(row.uidvalidity), int(row.highestmodseq), int(row.uidnext))


def load_table(conn: Connection, box_id: int, key: BoxKey) -> EntryTable:
    cur, mark = driver(conn)
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
    conn: Connection, box_id: int, old: EntryTable, since: int, key: BoxKey
) -> EntryTable | None:
    """``old`` (read at modseq ``since``) brought to ``key``; None: read the box again."""
    cur, mark = driver(conn)
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
