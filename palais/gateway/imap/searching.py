"""Evaluation of a parsed search program against the selected mailbox.

Keys narrow a candidate set from left to right, so the cheap ones (flags,
sequence sets) run first and the costly ones (body text, unknown headers)
only read the messages still in the running. Header and sent-date keys go
to the store's index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta

from palais.gateway.imap.mime import header_fields
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
    SearchKey,
    SizeKey,
    TextKey,
)
from palais.gateway.imap.textsearch import body_text, decode_header_value
from palais.gateway.imap.view import SelectedMailbox
from palais.mailbox.identity import Identity
from palais.mailbox.model import HeaderField, MessageRecord
from palais.mailbox.ports import EntryTable, MailAccess

__all__ = ["Searcher"]

_INDEXED = {f.value: f for f in HeaderField}
_BATCH = 500


class Searcher:
    __slots__ = ("_records", "_table", "access", "view", "who")

    def __init__(self, access: MailAccess, who: Identity, view: SelectedMailbox) -> None:
        self.access = access
        self.who = who
        self.view = view
        self._table: EntryTable | None = None
        self._records: dict[int, MessageRecord] = {}

    async def run(self, key: SearchKey) -> list[int]:
        """Matching UIDs, ascending, among those the client knows."""
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

    async def _record_map(self, uids: set[int]) -> dict[int, MessageRecord]:
        missing = sorted(u for u in uids if u not in self._records)
        for i in range(0, len(missing), _BATCH):
            for record in await self.access.records(
                self.who, self.view.info.id, missing[i : i + _BATCH]
            ):
                self._records[record.uid] = record
        return self._records

    async def _eval(self, key: SearchKey, candidates: set[int]) -> set[int]:
        if not candidates:
            return set()
        if isinstance(key, Everything):
            return candidates
        if isinstance(key, Nothing):
            return set()
        if isinstance(key, AllOf):
            for sub in key.keys:
                candidates = await self._eval(sub, candidates)
            return candidates
        if isinstance(key, AnyOf):
            matched: set[int] = set()
            for sub in key.keys:
                matched |= await self._eval(sub, candidates - matched)
            return matched
        if isinstance(key, Negation):
            return candidates - await self._eval(key.key, candidates)
        if isinstance(key, InSequence):
            return self._in_sequence(key, candidates)
        if isinstance(key, HasFlag):
            wanted = key.flag.lower()
            present = key.present
            return candidates & await self._uids_where(
                lambda flags: any(f.lower() == wanted for f in flags) == present
            )
        if isinstance(key, ModSeqKey):
            table = await self._entry_table()
            uids, floor = table.uids, key.modseq
            return candidates & {uids[i] for i, m in enumerate(table.modseqs) if m >= floor}
        if isinstance(key, SizeKey):
            records = await self._record_map(candidates)
            if key.larger:
                return {u for u in candidates if u in records and records[u].size > key.size}
            return {u for u in candidates if u in records and records[u].size < key.size}
        if isinstance(key, DateKey):
            return await self._date(key, candidates)
        if isinstance(key, HeaderKey):
            return await self._header(key, candidates)
        return await self._text(key, candidates)

    def _in_sequence(self, key: InSequence, candidates: set[int]) -> set[int]:
        uids = self.view.uids
        if key.uid:
            top = uids[-1] if uids else 0
            return {u for u in candidates if key.numbers.contains_uid(u, top)}
        exists = len(uids)
        out = set()
        for u in candidates:
            seq = self.view.seq_of(u)
            if seq is not None and key.numbers.contains_uid(seq, exists):
                out.add(u)
        return out

    async def _date(self, key: DateKey, candidates: set[int]) -> set[int]:
        if key.sent:
            since = key.day if key.op in ("SINCE", "ON") else None
            before = (
                key.day
                if key.op == "BEFORE"
                else (key.day + timedelta(days=1) if key.op == "ON" else None)
            )
            return candidates & await self.access.search_sent(
                self.who, self.view.info.id, since, before
            )
        records = await self._record_map(candidates)
        out = set()
        for u in candidates:
            record = records.get(u)
            if record is None:
                continue
            day = record.internaldate.date()
            if (
                (key.op == "BEFORE" and day < key.day)
                or (key.op == "ON" and day == key.day)
                or (key.op == "SINCE" and day >= key.day)
            ):
                out.add(u)
        return out

    async def _header(self, key: HeaderKey, candidates: set[int]) -> set[int]:
        indexed = _INDEXED.get(key.name)
        if indexed is not None and key.text:
            return candidates & await self.access.search_header(
                self.who, self.view.info.id, indexed, key.text
            )
        records = await self._record_map(candidates)
        needle = key.text.casefold()
        out = set()
        for u in sorted(candidates):
            record = records.get(u)
            if record is None:
                continue
            if record.header_size > 0:
                header = await self.access.read_header(record.blob, record.header_size)
            else:
                header = await self.access.read(record.blob)
            for f in header_fields(header):
                if f.name == key.name and needle in decode_header_value(f.value).casefold():
                    out.add(u)
                    break
        return out

    async def _text(self, key: TextKey, candidates: set[int]) -> set[int]:
        records = await self._record_map(candidates)
        needle = key.text.casefold()
        out = set()
        for u in sorted(candidates):
            record = records.get(u)
            if record is None:
                continue
            data = await self.access.read(record.blob)
            body_start = data.find(b"\r\n\r\n")
            body_start = body_start + 4 if body_start >= 0 else 0
            raw = data if key.headers_too else data[body_start:]
            if needle.isascii() and needle.encode("ascii") in raw.lower():
                out.add(u)
                continue
            text = body_text(data)
            if key.headers_too:
                text = decode_header_value(data[:body_start]) + "\n" + text
            if needle in text.casefold():
                out.add(u)
        return out
