"""FETCH and UID FETCH, with CONDSTORE's CHANGEDSINCE and MODSEQ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.registry import Optional, Reply, bad, command, ok
from palais.gateway.imap.envelope import envelope
from palais.gateway.imap.fetchspec import FetchItem, parse_fetch_atts, parse_fetch_modifiers
from palais.gateway.imap.headers import Field
from palais.gateway.imap.mime import (
    Part,
    bodystructure,
    extract,
    header_fields,
    parse_message,
    select_fields,
)
from palais.gateway.imap.parser import Args
from palais.gateway.imap.response import encode, flag_list, internaldate
from palais.gateway.imap.sequence import SequenceSet, SequenceSetError
from palais.gateway.imap.states import SELECTED_ONLY
from palais.mailbox.model import FlagMode, MessageRecord

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session

# Records are asked for in batches: bounded memory on "1:* FLAGS" of a big box.
_BATCH = 500
_SEEN = frozenset({"\\Seen"})


def resolve(session: Session, numbers: SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
    """(sequence number, UID) pairs the set names, ascending."""
    view = selected(session)
    if uid:
        pairs = []
        for u in numbers.uids(view.uids):
            seq = view.seq_of(u)
            if seq is not None:
                pairs.append((seq, u))
        return pairs
    return [(s, view.uid_at(s)) for s in numbers.seqnums(view.exists)]


class _Message:
    """One message's bytes, read at most once and only as far as needed."""

    __slots__ = ("_data", "_fields", "_header", "_root", "record", "session")

    def __init__(self, session: Session, record: MessageRecord) -> None:
        self.session = session
        self.record = record
        self._data: bytes | None = None
        self._header: bytes | None = None
        self._root: Part | None = None
        self._fields: list[Field] | None = None

    async def data(self) -> bytes:
        if self._data is None:
            self._data = await self.session.access.read(self.record.blob)
        return self._data

    async def root(self) -> Part:
        if self._root is None:
            self._root = parse_message(await self.data())
        return self._root

    async def header(self) -> bytes:
        if self._data is not None:
            root = await self.root()
            return self._data[: root.body_start]
        if self._header is None:
            if self.record.header_size > 0:
                self._header = await self.session.access.read_header(
                    self.record.blob, self.record.header_size
                )
            else:
                root = await self.root()
                return (await self.data())[: root.body_start]
        return self._header

    async def fields(self) -> list[Field]:
        if self._fields is None:
            if self._root is not None:
                self._fields = self._root.fields
            else:
                self._fields = header_fields(await self.header())
        return self._fields


Piece = tuple[bytes, bytes | None]  # text, and the content of a literal that follows it


async def _item(session: Session, item: FetchItem, msg: _Message) -> Piece:
    """One attribute's response; a body goes apart so it is never copied."""
    name = item.name
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + internaldate(msg.record.internaldate), None
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % msg.record.size, None
    if name == "ENVELOPE":
        return b"ENVELOPE " + encode(envelope(await msg.fields()), utf8=session.utf8), None
    if name in ("BODYSTRUCTURE", "BODY"):
        data = await msg.data()
        value = bodystructure(data, await msg.root(), extended=name == "BODYSTRUCTURE")
        return name.encode() + b" " + encode(value, utf8=session.utf8), None
    if name == "RFC822":
        return b"RFC822", await msg.data()
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER", await msg.header()
    if name == "RFC822.TEXT":
        root = await msg.root()
        return b"RFC822.TEXT", (await msg.data())[root.body_start :]
    assert item.section is not None
    section = item.section
    content: bytes | None
    if not section.needs_body:
        if section.kind == "HEADER":
            content = await msg.header()
        else:
            content = select_fields(
                await msg.fields(), section.fields, exclude=section.kind == "HEADER.FIELDS.NOT"
            )
    else:
        content = extract(await msg.data(), await msg.root(), section)
    key = item.response_key()
    if content is None:
        return key + b" NIL", None
    if item.partial is not None:
        start, length = item.partial
        content = content[start : start + length]
    return key, content


async def do_fetch(
    session: Session,
    numbers: SequenceSet,
    items: Sequence[FetchItem],
    changed_since: int | None,
    *,
    uid: bool,
) -> Reply:
    view = selected(session)
    who = identity(session)
    try:
        pairs = resolve(session, numbers, uid=uid)
    except SequenceSetError as exc:
        return bad(str(exc))
    wanted = list(items)
    if uid and not any(i.name == "UID" for i in wanted):
        wanted.insert(0, FetchItem("UID"))
    if changed_since is not None or any(i.name == "MODSEQ" for i in wanted):
        session.condstore = True
        if not any(i.name == "MODSEQ" for i in wanted):
            wanted.append(FetchItem("MODSEQ"))
    marks_seen = any(i.sets_seen for i in wanted) and not view.read_only
    seq_of = dict((u, s) for s, u in pairs)
    for start in range(0, len(pairs), _BATCH):
        batch = [u for _, u in pairs[start : start + _BATCH]]
        records = await session.access.records(who, view.info.id, batch)
        if changed_since is not None:
            records = [r for r in records if r.modseq > changed_since]
        changed: dict[int, tuple[frozenset[str], int]] = {}
        if marks_seen:
            unseen = [r.uid for r in records if "\\Seen" not in r.flags]
            if unseen:
                result = await session.access.store_flags(
                    who, view.info.id, unseen, FlagMode.ADD, _SEEN
                )
                for entry in result.updated:
                    changed[entry.uid] = (entry.flags, entry.modseq)
                    view.note_reported(entry.uid, entry.modseq)
        for record in records:
            flags, modseq = changed.get(record.uid, (record.flags, record.modseq))
            msg = _Message(session, record)
            pieces: list[Piece] = []
            names: set[str] = set()
            for item in wanted:
                if item.name in names and item.name != "BODY[]":
                    continue
                names.add(item.name)
                if item.name == "UID":
                    pieces.append((b"UID %d" % record.uid, None))
                elif item.name == "FLAGS":
                    pieces.append((b"FLAGS " + flag_list(flags), None))
                elif item.name == "MODSEQ":
                    pieces.append((b"MODSEQ (%d)" % modseq, None))
                else:
                    pieces.append(await _item(session, item, msg))
            if record.uid in changed and "FLAGS" not in names:
                pieces.append((b"FLAGS " + flag_list(flags), None))
                names.add("FLAGS")
            if session.condstore and "FLAGS" in names and "MODSEQ" not in names:
                pieces.append((b"MODSEQ (%d)" % modseq, None))
            _write_fetch(session, seq_of[record.uid], pieces)
            await session.flush()
    return ok("FETCH completed")


def _write_fetch(session: Session, seq: int, pieces: list[Piece]) -> None:
    session.write(b"* %d FETCH (" % seq)
    for i, (text, content) in enumerate(pieces):
        session.write(b" " + text if i else text)
        if content is not None:
            session.write(b" {%d}\r\n" % len(content))
            session.write(content)
    session.write(b")\r\n")


@command(
    "FETCH",
    syntax=(Args.sequence_set, parse_fetch_atts, Optional(parse_fetch_modifiers)),
    states=SELECTED_ONLY,
    defers_expunge=True,
)
async def fetch(
    session: Session,
    tag: bytes,
    numbers: SequenceSet,
    items: tuple[FetchItem, ...],
    changed: int | None,
) -> Reply:
    return await do_fetch(session, numbers, items, changed, uid=False)


@command(
    "UID FETCH",
    syntax=(Args.sequence_set, parse_fetch_atts, Optional(parse_fetch_modifiers)),
    states=SELECTED_ONLY,
)
async def uid_fetch(
    session: Session,
    tag: bytes,
    numbers: SequenceSet,
    items: tuple[FetchItem, ...],
    changed: int | None,
) -> Reply:
    return await do_fetch(session, numbers, items, changed, uid=True)
