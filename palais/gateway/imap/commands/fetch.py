"""FETCH and UID FETCH, with CONDSTORE's CHANGEDSINCE and MODSEQ."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from itertools import compress
from typing import TYPE_CHECKING

from palais.gateway.imap import codes, searchres
from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.registry import Optional, Reply, bad, command, no, ok
from palais.gateway.imap.envelope import envelope
from palais.gateway.imap.fetchspec import (
    FetchItem,
    FetchModifiers,
    parse_fetch_atts,
    parse_fetch_modifiers,
)
from palais.gateway.imap.headers import Field
from palais.gateway.imap.mime import (
    Part,
    UnknownEncoding,
    binary_section,
    bodystructure,
    extract,
    header_fields,
    parse_message,
    select_fields,
)
from palais.gateway.imap.pacing import Pacer
from palais.gateway.imap.recent import RECENT, RecentSet
from palais.gateway.imap.response import encode, flag_list, internaldate
from palais.gateway.imap.sequence import SequenceSet, SequenceSetError, format_set
from palais.gateway.imap.states import SELECTED_ONLY
from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.model import FlagMode, MessageRecord
from palais.mailbox.ports import EntryTable

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session
    from palais.gateway.imap.view import SelectedMailbox

Span = tuple[int, int]

# Records are asked for in batches: bounded memory on "1:* FLAGS" of a big box.
_BATCH = 500
_SEEN = frozenset({"\\Seen"})
_RECENT = frozenset({RECENT})
# Responses are built in memory and handed to TLS in pieces of about this size.
_CHUNK = 128 * 1024
# Items the store's entry table answers without reading any message.
_TABLE_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})
_WINDOW = 4096  # table entries formatted at a time
_ENVELOPE = "imap.envelope"
_ENVELOPE_UTF8 = "imap.envelope.utf8"


def resolve_spans(view: SelectedMailbox, numbers: SequenceSet, *, uid: bool) -> list[Span]:
    """0-based [start, stop) positions in the view that the set names, ascending."""
    numbers = searchres.bind(view, numbers, uid=uid)
    if uid:
        return numbers.uid_spans(view.uids)
    return numbers.seq_spans(view.exists)


def resolve(session: Session, numbers: SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
    """(sequence number, UID) pairs the set names, ascending."""
    view = selected(session)
    uids = view.uids
    return [
        (i + 1, uids[i])
        for start, stop in resolve_spans(view, numbers, uid=uid)
        for i in range(start, stop)
    ]


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
    if name in ("BINARY[]", "BINARY.SIZE[]"):  # RFC 3516: the decoded section
        content = binary_section(await msg.data(), await msg.root(), section.path)
        key = item.response_key()
        if content is None:
            return key + (b" 0" if name == "BINARY.SIZE[]" else b" NIL"), None
        if name == "BINARY.SIZE[]":
            return key + b" %d" % len(content), None
        if item.partial is not None:
            start, length = item.partial
            content = content[start : start + length]
        return key, content
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


async def _render_envelope(session: Session, msg: _Message, aspect: str) -> bytes:
    value = encode(envelope(await msg.fields()), utf8=session.utf8)
    session.access.remember(msg.record.blob, aspect, value)
    return value


class _Output:
    """FETCH responses gathered into large writes: one TLS write per ~128 KiB, not per item."""

    __slots__ = ("parts", "session", "size")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    async def send(self) -> None:
        self.close()
        await self.session.flush()

    def close(self) -> None:
        """Hand what is gathered to the session, which sends it with the tagged reply."""
        if self.parts:
            self.session.write(b"".join(self.parts))
            self.parts.clear()
            self.size = 0


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
        spans = resolve_spans(view, numbers, uid=uid)
    except SequenceSetError as exc:
        return bad(str(exc))
    table: EntryTable | None = None
    if all(i.name in _TABLE_ITEMS for i in items):
        table = await session.access.entries(who, view.info.id)
        if changed_since is not None and changed_since >= table.highestmodseq:
            # A client in sync asks this on every reconnection: nothing to say.
            session.condstore = True
            return ok("FETCH completed")
    wanted = list(items)
    if uid and not any(i.name == "UID" for i in wanted):
        wanted.insert(0, FetchItem("UID"))
    if changed_since is not None or any(i.name == "MODSEQ" for i in wanted):
        session.condstore = True
        if not any(i.name == "MODSEQ" for i in wanted):
            wanted.append(FetchItem("MODSEQ"))
    marks_seen = any(i.sets_seen for i in wanted) and not view.read_only
    out = _Output(session)
    pacer = session.pacer()  # 1:* of a big box must not hold the loop from everybody else
    if table is not None:  # UID and MODSEQ, added above, are table items too
        found = await _fetch_from_table(
            session, view, table, spans, wanted, changed_since, out, pacer
        )
        out.close()
        if not found:
            return _expunge_issued()
        return ok("FETCH completed")
    # Repeated attributes are answered once (each BODY[...] section apart).
    plan: list[FetchItem] = []
    names: set[str] = set()
    for item in wanted:
        if item.name in names and not item.sectioned:
            continue
        names.add(item.name)
        plan.append(item)
    modseq_after_flags = session.condstore and "FLAGS" in names and "MODSEQ" not in names
    envelope_aspect = _ENVELOPE_UTF8 if session.utf8 else _ENVELOPE
    reports_flags = "FLAGS" in names or "MODSEQ" in names
    recent = view.recent if view.recent else None  # \Recent here (IMAP4rev1)
    uids = view.uids
    asked = shown = 0
    for positions in _batches(spans, _BATCH):
        batch = [uids[i] for i in positions]
        seq_of = {uids[i]: i + 1 for i in positions}
        records = await session.access.records(who, view.info.id, batch)
        asked += len(batch)
        shown += len(records)
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
            this = record.uid
            seq = seq_of.get(this)
            if seq is None:  # a store may answer more than asked: never shown
                shown -= 1
                continue
            flags, modseq = changed.get(this, (record.flags, record.modseq))
            if recent is not None and this in recent:
                flags = flags | _RECENT
            if reports_flags or this in changed:
                announce = view.learn_keywords(flags)
                if announce is not None:
                    out.add(announce)
                view.saw(this, modseq)
            msg: _Message | None = None
            mark, mark_size = len(out.parts), out.size
            line = [b"* %d FETCH (" % seq]
            sep = b""
            try:
                for item in plan:
                    name = item.name
                    if name == "UID":
                        line.append(sep + b"UID %d" % this)
                    elif name == "FLAGS":
                        line.append(sep + b"FLAGS " + flag_list(flags))
                    elif name == "MODSEQ":
                        line.append(sep + b"MODSEQ (%d)" % modseq)
                    elif name == "ENVELOPE":
                        # A page of envelopes is what a mail client asks for on
                        # every folder view: the store keeps their rendering.
                        value = session.access.recall(record.blob, envelope_aspect)
                        if value is None:
                            msg = msg or _Message(session, record)
                            value = await _render_envelope(session, msg, envelope_aspect)
                        line.append(sep + b"ENVELOPE " + value)
                    else:
                        msg = msg or _Message(session, record)
                        text, content = await _item(session, item, msg)
                        line.append(sep + text)
                        if content is not None:
                            # A body goes out apart, never copied into the line;
                            # decoded bytes with a NUL need a literal8 (RFC 3516 4.3).
                            binary = name == "BINARY[]" and b"\0" in content
                            line.append((b" ~{%d}\r\n" if binary else b" {%d}\r\n") % len(content))
                            out.add(b"".join(line))
                            out.add(content)
                            line = []
                    sep = b" "
            except NoSuchMailbox:
                # Expunged by another session meanwhile, its bytes erased:
                # not shown (RFC 5530 EXPUNGEISSUED).
                del out.parts[mark:]
                out.size = mark_size
                shown -= 1
                continue
            except UnknownEncoding:
                del out.parts[mark:]
                out.size = mark_size
                out.close()
                return no(
                    "A part's Content-Transfer-Encoding is unknown: fetch it with BODY[]",
                    codes.UNKNOWN_CTE,
                )
            if "FLAGS" not in names and this in changed:
                # RFC 3501 6.4.5: a FETCH that sets \Seen reports the new flags
                # (and, CONDSTORE enabled, UID and MODSEQ: RFC 7162 3.1).
                line.append(b" FLAGS " + flag_list(flags))
                if session.condstore and "UID" not in names:
                    line.append(b" UID %d" % this)
                if session.condstore and "MODSEQ" not in names:
                    line.append(b" MODSEQ (%d)" % modseq)
            elif modseq_after_flags:
                line.append(b" MODSEQ (%d)" % modseq)
            line.append(b")\r\n")
            out.add(b"".join(line))
            if out.size >= _CHUNK:  # checked here: a coroutine per message costs
                await out.send()
            if pacer.due():
                await pacer.pause()
    out.close()
    if asked and not shown:
        return _expunge_issued()
    return ok("FETCH completed")


def _expunge_issued() -> Reply:
    """Every message named was expunged by another session, not yet announced."""
    return no("Those messages were expunged by another session", codes.EXPUNGEISSUED)


def _batches(spans: list[Span], size: int) -> Iterator[list[int]]:
    """The positions the spans name, ``size`` at a time: 1:* of a big box is
    never one list of every message."""
    batch: list[int] = []
    for start, stop in spans:
        while start < stop:
            end = min(stop, start + size - len(batch))
            batch.extend(range(start, end))
            start = end
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


async def _fetch_from_table(
    session: Session,
    view: SelectedMailbox,
    table: EntryTable,
    spans: list[Span],
    wanted: list[FetchItem],
    changed_since: int | None,
    out: _Output,
    pacer: Pacer,
) -> bool:
    """UID, FLAGS and MODSEQ straight from the store's entry table: no record, no message.

    False when every message named is gone from the table (expunged meanwhile)."""
    if "FLAGS" in (i.name for i in wanted):
        for flags in table.flag_sets:  # a handful
            announce = view.learn_keywords(flags)
            if announce is not None:
                out.add(announce)
    names: list[str] = []
    for item in wanted:
        if item.name not in names:
            names.append(item.name)
    if session.condstore and "FLAGS" in names and "MODSEQ" not in names:
        names.append("MODSEQ")
    formats = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)"}
    line = b"* %d FETCH (" + b" ".join(formats[n] for n in names) + b")\r\n"
    flag_text = [flag_list(flags) for flags in table.flag_sets]
    uids, modseqs, flag_ids = view.uids, table.modseqs, table.flag_ids
    recent = view.recent if view.recent and "FLAGS" in names else None
    # Usually the view shows the table's entries (perhaps with new ones after
    # them, not yet announced): a view position is then a table position.
    count = len(uids)
    aligned = len(table.uids) >= count and table.uids[:count] == uids
    asked = present = 0
    for first, stop in spans:
        for start in range(first, stop, _WINDOW):
            end = min(stop, start + _WINDOW)
            view_pos: Sequence[int]
            table_pos: Sequence[int]
            if aligned:
                view_pos = table_pos = range(start, end)
                if changed_since is not None:
                    window = modseqs[start:end]
                    if max(window) <= changed_since:
                        continue
                    newer = map(changed_since.__lt__, window)
                    view_pos = table_pos = list(compress(range(start, end), newer))
            else:
                found = [(i, table.index_of(uids[i])) for i in range(start, end)]
                pairs = [(i, j) for i, j in found if j is not None]
                asked += len(found)
                present += len(pairs)
                if changed_since is not None:
                    pairs = [(i, j) for i, j in pairs if modseqs[j] > changed_since]
                view_pos = [i for i, _ in pairs]
                table_pos = [j for _, j in pairs]
            columns = {
                "UID": map(uids.__getitem__, view_pos),
                "FLAGS": map(flag_text.__getitem__, map(flag_ids.__getitem__, table_pos)),
                "MODSEQ": map(modseqs.__getitem__, table_pos),
            }
            if recent is not None:  # the session's recent messages show \Recent
                columns["FLAGS"] = iter(
                    _with_recent(flag_text, table, recent, uids, view_pos, table_pos)
                )
            seqs = (i + 1 for i in view_pos)
            rows = zip(seqs, *(columns[n] for n in names), strict=True)
            out.add(b"".join(map(line.__mod__, rows)))
            if out.size >= _CHUNK:
                await out.send()
            await pacer.tick()
    _settle(view, table, spans, changed_since)
    return present > 0 or asked == 0


def _with_recent(
    flag_text: list[bytes],
    table: EntryTable,
    recent: RecentSet,
    uids: Sequence[int],
    view_pos: Sequence[int],
    table_pos: Sequence[int],
) -> list[bytes]:
    """The FLAGS column with \\Recent added to this session's recent messages."""
    out: list[bytes] = []
    sets, ids = table.flag_sets, table.flag_ids
    marked: dict[int, bytes] = {}
    for v, t in zip(view_pos, table_pos, strict=True):
        fid = ids[t]
        if uids[v] in recent:
            text = marked.get(fid)
            if text is None:
                text = marked[fid] = flag_list(sets[fid] | _RECENT)
            out.append(text)
        else:
            out.append(flag_text[fid])
    return out


def _settle(
    view: SelectedMailbox, table: EntryTable, spans: list[Span], changed_since: int | None
) -> None:
    """Tell the view which modseqs the table showed, so that no change pending
    or still on its way reports an older one afterwards (RFC 7162: a UID's
    MODSEQ never goes back)."""
    known = view.highestmodseq
    candidates = set(view.pending_flag_uids())
    if table.highestmodseq > known:  # changes whose events have not come yet
        modseqs, table_uids = table.modseqs, table.uids
        candidates.update(table_uids[j] for j, m in enumerate(modseqs) if m > known)
    if not candidates:
        return
    starts = [start for start, _ in spans]
    for uid in candidates:
        seq = view.seq_of(uid)
        j = table.index_of(uid)
        if seq is None or j is None:
            continue
        k = bisect.bisect_right(starts, seq - 1) - 1
        if k < 0 or seq - 1 >= spans[k][1]:
            continue  # not named by this FETCH
        modseq = table.modseqs[j]
        if changed_since is None or modseq > changed_since:
            view.saw(uid, modseq)


@command(
    "FETCH",
    syntax=(searchres.sequence_set, parse_fetch_atts, Optional(parse_fetch_modifiers)),
    states=SELECTED_ONLY,
    defers_expunge=True,
    memo_parse=True,
)
async def fetch(
    session: Session,
    tag: bytes,
    numbers: SequenceSet,
    items: tuple[FetchItem, ...],
    modifiers: FetchModifiers | None,
) -> Reply:
    if modifiers is not None and modifiers.vanished:
        return bad("VANISHED is a UID FETCH modifier")  # RFC 7162 3.2.6
    changed = None if modifiers is None else modifiers.changed_since
    return await do_fetch(session, numbers, items, changed, uid=False)


@command(
    "UID FETCH",
    syntax=(searchres.sequence_set, parse_fetch_atts, Optional(parse_fetch_modifiers)),
    states=SELECTED_ONLY,
    memo_parse=True,
)
async def uid_fetch(
    session: Session,
    tag: bytes,
    numbers: SequenceSet,
    items: tuple[FetchItem, ...],
    modifiers: FetchModifiers | None,
) -> Reply:
    changed = None if modifiers is None else modifiers.changed_since
    if modifiers is not None and modifiers.vanished and changed is not None:
        if not session.qresync:
            return bad("VANISHED needs ENABLE QRESYNC first")  # RFC 7162 3.2.6
        await _vanished_earlier(
            session, searchres.bind(selected(session), numbers, uid=True), changed
        )
    return await do_fetch(session, numbers, items, changed, uid=True)


async def _vanished_earlier(session: Session, numbers: SequenceSet, since: int) -> None:
    """``VANISHED (EARLIER)``: the UIDs of the set removed since ``since``, before any FETCH."""
    view = selected(session)
    gone = await session.access.vanished(identity(session), view.info.id, since)
    if not gone:
        return
    # "*" is the highest UID in use; UIDs removed above it are still named by "n:*".
    top = max(view.uids[-1] if view.uids else 0, gone[-1])
    named = [uid for uid in gone if numbers.contains_uid(uid, top)]
    if named:
        session.untagged(b"VANISHED (EARLIER) " + format_set(named))
