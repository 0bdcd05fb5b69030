"""Evaluation of a parsed search program against the selected mailbox.

Keys narrow a candidate set: the cheap ones (flags, sequence sets) run
first, whatever the order the client wrote them in, and the costly ones
(body text, unknown headers) only read the messages still in the running.
Header and sent-date keys go to the store's index. A key that does not
depend on the candidates is answered once per search however often it
appears, and every message is read and decoded at most once, for all the
text keys of the program together. The loops over many messages give the
event loop back every few milliseconds (``Pacer``).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterable
from datetime import timedelta

from palais.gateway.imap.mime import header_fields
from palais.gateway.imap.pacing import Pacer
from palais.gateway.imap.searchres import SAVED
from palais.gateway.imap.searchspec import (
    AllOf,
    AnyOf,
    DateKey,
    Everything,
    HasFlag,
    HeaderKey,
    InSequence,
    ModSeqKey,
    Negation,
    Nothing,
    Recent,
    SearchKey,
    SizeKey,
    TextKey,
    leaves,
)
from palais.gateway.imap.textsearch import body_text, decode_header_value
from palais.gateway.imap.view import SelectedMailbox
from palais.mailbox.identity import Identity
from palais.mailbox.model import HeaderField, MessageRecord
from palais.mailbox.ports import EntryTable, MailAccess

__all__ = ["Searcher"]

_INDEXED = {f.value: f for f in HeaderField}
_BATCH = 500
# Records asked for at a time while reading messages: a store reads a few
# hundred in some milliseconds, a slice's worth.
_SCAN_BATCH = 200
# A message this big is decoded off the event loop: one such decode alone
# would hold it longer than a slice.
_BIG = 256 * 1024

ScanKey = TextKey | HeaderKey


def _scans(key: SearchKey) -> bool:
    """Whether the key reads message bytes (rather than the store's index or table)."""
    if isinstance(key, TextKey):
        return True
    return isinstance(key, HeaderKey) and not (key.name in _INDEXED and key.text)


def _rank(key: SearchKey) -> int:
    """Cost class of a key: what the store's table answers, what its index
    answers, what needs message records, what reads message bytes."""
    if isinstance(key, (AllOf, AnyOf)):
        return max(map(_rank, key.keys))
    if isinstance(key, Negation):
        return _rank(key.key)
    if isinstance(key, SizeKey) or (isinstance(key, DateKey) and not key.sent):
        return 2
    if isinstance(key, (HeaderKey, TextKey)):
        return 3 if _scans(key) else 1
    return 1 if isinstance(key, DateKey) else 0


def _internal_date_test(key: DateKey) -> Callable[[MessageRecord], bool]:
    """BEFORE, ON and SINCE on the internal date (the day it came in)."""
    day = key.day
    if key.op == "BEFORE":
        return lambda r: r.internaldate.date() < day
    if key.op == "ON":
        return lambda r: r.internaldate.date() == day
    return lambda r: r.internaldate.date() >= day


class Searcher:
    __slots__ = (
        "_hits",
        "_narrowed",
        "_needles",
        "_pacer",
        "_scanned",
        "_table",
        "_whole",
        "access",
        "view",
        "who",
    )

    def __init__(
        self,
        access: MailAccess,
        who: Identity,
        view: SelectedMailbox,
        pacer: Pacer | None = None,
    ) -> None:
        self.access = access
        self.who = who
        self.view = view
        self._table: EntryTable | None = None
        self._pacer = pacer if pacer is not None else Pacer()
        # Answers over the whole box of keys that do not depend on the candidates.
        self._whole: dict[SearchKey, set[int]] = {}
        # The text keys of the program, their needles, the messages read so
        # far and, per key, those of them that matched.
        self._needles: dict[ScanKey, str] = {}
        self._scanned: set[int] = set()
        self._hits: dict[ScanKey, set[int]] = {}
        # Per text key, what the store's substring index narrowed it to (None: no index).
        self._narrowed: dict[ScanKey, set[int] | None] = {}

    async def run(self, key: SearchKey) -> list[int]:
        """Matching UIDs, ascending, among those the client knows."""
        for leaf in leaves(key):
            if isinstance(leaf, (TextKey, HeaderKey)) and _scans(leaf):
                self._needles[leaf] = leaf.text.casefold()
                self._hits[leaf] = set()
        return sorted(await self._eval(key, set(self.view.uids)))

    async def modseq_of(self, uids: Iterable[int]) -> int:
        table = await self._entry_table()
        modseqs = table.modseqs
        found = (table.index_of(u) for u in uids)
        return max((modseqs[i] for i in found if i is not None), default=0)

    async def _entry_table(self) -> EntryTable:
        if self._table is None:
            self._table = await self.access.entries(self.who, self.view.info.id)
        return self._table

    async def _uids_where(self, keep_flags: Callable[[frozenset[str]], bool]) -> set[int]:
        """UIDs of the entries whose flag set passes ``keep_flags``."""
        table = await self._entry_table()
        chosen = {fid for fid, flags in enumerate(table.flag_sets) if keep_flags(flags)}
        if not chosen:
            return set()
        uids = table.uids
        if len(chosen) == len(table.flag_sets):
            return set(uids)
        return {uids[i] for i, fid in enumerate(table.flag_ids) if fid in chosen}

    async def _where(self, candidates: set[int], keep: Callable[[MessageRecord], bool]) -> set[int]:
        """The candidates whose record passes ``keep``; records are read a batch
        at a time and not kept (a search of a big box holds its UIDs, no more)."""
        wanted = sorted(candidates)
        out: set[int] = set()
        for i in range(0, len(wanted), _BATCH):
            records = await self.access.records(self.who, self.view.info.id, wanted[i : i + _BATCH])
            out.update(r.uid for r in records if keep(r))
            await self._pacer.tick()
        return out

    async def _eval(self, key: SearchKey, candidates: set[int]) -> set[int]:
        if not candidates:
            return set()
        if isinstance(key, Everything):
            return candidates
        if isinstance(key, Nothing):
            return set()
        if isinstance(key, AllOf):
            for sub in sorted(key.keys, key=_rank):
                candidates = await self._eval(sub, candidates)
                await self._pacer.tick()
            return candidates
        if isinstance(key, AnyOf):
            matched: set[int] = set()
            for sub in sorted(key.keys, key=_rank):
                matched |= await self._eval(sub, candidates - matched)
                await self._pacer.tick()
            return matched
        if isinstance(key, Negation):
            return candidates - await self._eval(key.key, candidates)
        if isinstance(key, (TextKey, HeaderKey)) and key in self._needles:
            return await self._scanned_hits(key, candidates)
        if isinstance(key, SizeKey):
            size = key.size
            if key.larger:
                return await self._where(candidates, lambda r: r.size > size)
            return await self._where(candidates, lambda r: r.size < size)
        if isinstance(key, DateKey) and not key.sent:
            return await self._where(candidates, _internal_date_test(key))
        whole = self._whole.get(key)
        if whole is None:
            whole = self._whole[key] = await self._whole_box(key)
        return candidates & whole

    async def _whole_box(self, key: SearchKey) -> set[int]:
        """The UIDs of the box that a key independent of the candidates matches."""
        if isinstance(key, InSequence):
            return self._in_sequence(key)
        if isinstance(key, Recent):
            return self._recent()
        if isinstance(key, HasFlag):
            wanted = key.flag.lower()
            present = key.present
            return await self._uids_where(
                lambda flags: any(f.lower() == wanted for f in flags) == present
            )
        if isinstance(key, ModSeqKey):
            table = await self._entry_table()
            uids, floor = table.uids, key.modseq
            return {uids[i] for i, m in enumerate(table.modseqs) if m >= floor}
        if isinstance(key, DateKey):
            since = key.day if key.op in ("SINCE", "ON") else None
            before = (
                key.day
                if key.op == "BEFORE"
                else (key.day + timedelta(days=1) if key.op == "ON" else None)
            )
            return await self.access.search_sent(self.who, self.view.info.id, since, before)
        assert isinstance(key, HeaderKey)  # an indexed field: the others are scanned
        return await self.access.search_header(
            self.who, self.view.info.id, _INDEXED[key.name], key.text
        )

    def _in_sequence(self, key: InSequence) -> set[int]:
        uids = self.view.uids
        if key.numbers is SAVED:  # "$": the saved messages, by number or UID alike
            spans = self.view.saved.uid_spans(uids)
        elif key.uid:
            spans = key.numbers.uid_spans(uids)
        else:
            spans = key.numbers.seq_spans(len(uids), strict=False)
        out: set[int] = set()
        for start, stop in spans:
            out.update(uids[start:stop])
        return out

    def _recent(self) -> set[int]:
        """The UIDs \\Recent in this session: a few UID ranges, no per-message test."""
        recent = self.view.recent
        if not recent:
            return set()
        uids = self.view.uids
        out: set[int] = set()
        for low, high in recent.ranges:
            out.update(uids[bisect.bisect_left(uids, low) : bisect.bisect_right(uids, high)])
        return out

    # -- keys that read the messages -------------------------------------------

    async def _scanned_hits(self, key: ScanKey, candidates: set[int]) -> set[int]:
        narrowed = await self._indexed(key)
        if narrowed is not None:
            # The store's substring index names the messages that may match:
            # only those are read, and the same exact test decides.
            candidates = candidates & narrowed
        missing = candidates - self._scanned
        if missing:
            await self._scan(sorted(missing))
        return candidates & self._hits[key]

    async def _indexed(self, key: ScanKey) -> set[int] | None:
        """The box's messages the store's index says may match, or None."""
        if key in self._narrowed:
            return self._narrowed[key]
        part = "header" if isinstance(key, HeaderKey) else "text" if key.headers_too else "body"
        found = await self.access.search_text(self.who, self.view.info.id, part, self._needles[key])
        self._narrowed[key] = found
        return found

    async def _scan(self, uids: list[int]) -> None:
        """Read each message once and test it against every text key of the program."""
        reads_body = any(isinstance(k, TextKey) for k in self._needles)
        for i in range(0, len(uids), _SCAN_BATCH):
            batch = uids[i : i + _SCAN_BATCH]
            records = await self.access.records(self.who, self.view.info.id, batch)
            await self._pacer.tick()
            for record in records:
                if reads_body or record.header_size <= 0:
                    data = await self.access.read(record.blob)
                else:
                    data = await self.access.read_header(record.blob, record.header_size)
                if len(data) >= _BIG:
                    found = await asyncio.to_thread(self._match, data)
                else:
                    found = self._match(data)
                for hit in found:
                    self._hits[hit].add(record.uid)
                await self._pacer.tick()
            self._scanned.update(batch)

    def _match(self, data: bytes) -> list[ScanKey]:
        """The text keys of the program that one message matches."""
        found: list[ScanKey] = []
        head = data.find(b"\r\n\r\n")
        body_start = head + 4 if head >= 0 else 0
        fields: list[tuple[str, str]] | None = None
        lower: bytes | None = None
        body_lower: bytes | None = None
        text: str | None = None
        full: str | None = None
        for key, needle in self._needles.items():
            if isinstance(key, HeaderKey):
                if fields is None:
                    fields = [
                        (f.name, decode_header_value(f.value).casefold())
                        for f in header_fields(data)
                    ]
                if any(name == key.name and needle in value for name, value in fields):
                    found.append(key)
                continue
            if needle.isascii():
                if key.headers_too:
                    lower = data.lower() if lower is None else lower
                    raw = lower
                else:
                    body_lower = data[body_start:].lower() if body_lower is None else body_lower
                    raw = body_lower
                if needle.encode("ascii") in raw:
                    found.append(key)
                    continue
            if text is None:
                text = body_text(data).casefold()
            if key.headers_too:
                if full is None:
                    full = decode_header_value(data[:body_start]).casefold() + "\n" + text
                if needle in full:
                    found.append(key)
            elif needle in text:
                found.append(key)
        return found
