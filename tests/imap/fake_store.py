"""An in-memory, recording implementation of ``MailAccess`` for the IMAP tests."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from palais.gateway.imap.headers import find_body_start, parse_fields
from palais.gateway.imap.textsearch import decode_header_value
from palais.mailbox.errors import CannotDoThat, NoSuchMailbox
from palais.mailbox.flags import check_storable
from palais.mailbox.identity import Identity
from palais.mailbox.model import (
    AppendResult,
    CopyResult,
    Entry,
    EventKind,
    FlagMode,
    HeaderField,
    MailboxEvent,
    MailboxInfo,
    MessageRecord,
    SpecialUse,
    StoreResult,
)
from palais.mailbox.ports import EntryTable, Unsubscribe
from palais.storage.memo import Memo

Listener = Callable[[MailboxEvent], None]


@dataclass
class _Message:
    uid: int
    flags: frozenset[str]
    modseq: int
    internaldate: datetime
    blob: str
    size: int
    header_size: int


@dataclass
class _Box:
    id: int
    name: str
    special_use: SpecialUse | None = None
    selectable: bool = True
    uidvalidity: int = 1000
    uidnext: int = 1
    modseq: int = 1
    messages: dict[int, _Message] = field(default_factory=dict)
    vanished: dict[int, int] = field(default_factory=dict)  # uid -> modseq of its removal


class FakeStore:
    """Boxes of one owner; every call is recorded in ``calls`` as (method, *arguments)."""

    def __init__(self) -> None:
        self.boxes: dict[str, _Box] = {}
        self.blobs: dict[str, bytes] = {}
        self.listeners: dict[int, list[Listener]] = {}
        self.calls: list[tuple[object, ...]] = []
        self.read_count = 0
        # Seconds each read of a message's bytes takes (a slow disk), for a
        # test that must see a long command still running.
        self.read_pause = 0.0
        self.recent_marks: dict[int, int] = {}  # box id -> highest UID told of first
        # As if another client had been told of every message delivered here
        # (no \Recent for the tests' sessions); False: deliveries stay recent.
        self.seen_elsewhere = True
        self.memo = Memo()
        for name, use, selectable in (
            ("INBOX", None, True),
            ("Envoyés", SpecialUse.SENT, True),
            ("Brouillons", SpecialUse.DRAFTS, True),
            ("Supprimés", SpecialUse.TRASH, True),
            ("Accusés de réception", None, True),
            ("Dossiers", None, False),
            ("Dossiers/2025-0000138", None, False),
            ("Dossiers/2025-0000138/Reçus", None, True),
            ("Dossiers/2025-0000138/Envoyés", None, True),
        ):
            self.add_box(name, use, selectable=selectable)

    # -- test helpers ----------------------------------------------------------

    def add_box(self, name: str, use: SpecialUse | None = None, *, selectable: bool = True) -> _Box:
        box = _Box(len(self.boxes) + 1, name, use, selectable, uidvalidity=1000 + len(self.boxes))
        self.boxes[name] = box
        return box

    def deliver(
        self,
        name: str,
        data: bytes,
        flags: frozenset[str] = frozenset(),
        internaldate: datetime | None = None,
    ) -> int:
        box = self._box(name)
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        box.modseq += 1
        uid = box.uidnext
        box.uidnext += 1
        box.messages[uid] = _Message(
            uid,
            flags,
            box.modseq,
            internaldate or datetime(2025, 3, 14, 9, 30, tzinfo=UTC),
            sha,
            len(data),
            find_body_start(data, 0, len(data)),
        )
        if self.seen_elsewhere:
            self.recent_marks[box.id] = uid
        self._emit(MailboxEvent(box.id, EventKind.ARRIVED, uid, flags, box.modseq))
        return uid

    def flags_of(self, name: str, uid: int) -> frozenset[str]:
        return self._box(name).messages[uid].flags

    def listener_count(self) -> int:
        return sum(len(v) for v in self.listeners.values())

    def _box(self, name: str) -> _Box:
        box = self.boxes.get(name)
        if box is None:
            raise NoSuchMailbox()
        return box

    def _by_id(self, mailbox_id: int) -> _Box:
        for box in self.boxes.values():
            if box.id == mailbox_id:
                return box
        raise NoSuchMailbox()

    def _emit(self, event: MailboxEvent) -> None:
        for listener in list(self.listeners.get(event.mailbox_id, ())):
            listener(event)

    def _info(self, box: _Box) -> MailboxInfo:
        return MailboxInfo(
            id=box.id,
            name=box.name,
            uidvalidity=box.uidvalidity,
            uidnext=box.uidnext,
            highestmodseq=box.modseq,
            messages=len(box.messages),
            unseen=sum(1 for m in box.messages.values() if "\\Seen" not in m.flags),
            special_use=box.special_use,
            selectable=box.selectable,
        )

    # -- MailAccess --------------------------------------------------------------

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        self.calls.append(("list_mailboxes",))
        return [self._info(b) for b in self.boxes.values()]

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        self.calls.append(("mailbox", name))
        return self._info(self._box(name))

    async def entries(self, who: Identity, mailbox_id: int) -> EntryTable:
        self.calls.append(("entries", mailbox_id))
        box = self._by_id(mailbox_id)
        return EntryTable.build(
            (
                (m.uid, m.flags, m.modseq)
                for m in sorted(box.messages.values(), key=lambda m: m.uid)
            ),
            highestmodseq=box.modseq,
            uidnext=box.uidnext,
        )

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        self.calls.append(("records", mailbox_id, list(uids)))
        box = self._by_id(mailbox_id)
        return [
            MessageRecord(m.uid, m.flags, m.modseq, m.internaldate, m.size, m.blob, m.header_size)
            for m in (box.messages[u] for u in sorted(uids) if u in box.messages)
        ]

    async def read(self, blob: str) -> bytes:
        self.calls.append(("read", blob))
        self.read_count += 1
        if self.read_pause:
            await asyncio.sleep(self.read_pause)
        return self.blobs[blob]

    async def read_header(self, blob: str, header_size: int) -> bytes:
        self.calls.append(("read_header", blob, header_size))
        return self.blobs[blob][:header_size]

    def recall(self, blob: str, aspect: str) -> bytes | None:
        self.calls.append(("recall", blob, aspect))
        return self.memo.recall(blob, aspect)

    def remember(self, blob: str, aspect: str, value: bytes) -> None:
        self.calls.append(("remember", blob, aspect))
        self.memo.remember(blob, aspect, value)

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        self.calls.append(("store_flags", mailbox_id, list(uids), mode, flags, unchanged_since))
        check_storable(flags)  # the domain's rule, as the real store applies it
        box = self._by_id(mailbox_id)
        updated: list[Entry] = []
        modified: list[int] = []
        for uid in uids:
            msg = box.messages.get(uid)
            if msg is None:
                continue
            if unchanged_since is not None and msg.modseq > unchanged_since:
                modified.append(uid)
                continue
            if mode is FlagMode.ADD:
                new = msg.flags | flags
            elif mode is FlagMode.REMOVE:
                new = msg.flags - flags
            else:
                new = flags
            if new == msg.flags:
                continue
            box.modseq += 1
            msg.flags, msg.modseq = new, box.modseq
            updated.append(Entry(uid, new, msg.modseq))
            self._emit(MailboxEvent(box.id, EventKind.FLAGS_CHANGED, uid, new, msg.modseq))
        return StoreResult(updated, modified)

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        self.calls.append(("expunge", mailbox_id, None if uids is None else list(uids)))
        box = self._by_id(mailbox_id)
        chosen = box.messages.keys() if uids is None else [u for u in uids if u in box.messages]
        gone = sorted(u for u in chosen if "\\Deleted" in box.messages[u].flags)
        for uid in gone:
            del box.messages[uid]
            box.modseq += 1
            box.vanished[uid] = box.modseq
            self._emit(MailboxEvent(box.id, EventKind.REMOVED, uid, modseq=box.modseq))
        return gone

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        self.calls.append(("append", mailbox_name, data, flags, internaldate))
        box = self._box(mailbox_name)
        if not box.selectable:
            raise CannotDoThat()
        uid = self.deliver(mailbox_name, data, flags, internaldate)
        return AppendResult(box.uidvalidity, uid)

    async def append_all(
        self,
        who: Identity,
        mailbox_name: str,
        messages: Sequence[tuple[bytes, frozenset[str], datetime | None]],
    ) -> list[AppendResult]:
        self.calls.append(("append_all", mailbox_name, len(messages)))
        box = self._box(mailbox_name)
        # All or none: refused before anything is delivered, as the real store
        # undoes its transaction (a message of "refuse" stands for a refusal).
        if not box.selectable or any(b"X-Refuse: yes" in data for data, _, _ in messages):
            raise CannotDoThat()
        return [
            AppendResult(box.uidvalidity, self.deliver(mailbox_name, data, flags, when))
            for data, flags, when in messages
        ]

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        self.calls.append(("copy", mailbox_id, list(uids), dest_name))
        return self._copy(mailbox_id, uids, dest_name)

    def _copy(self, mailbox_id: int, uids: Sequence[int], dest_name: str) -> CopyResult:
        source = self._by_id(mailbox_id)
        dest = self._box(dest_name)
        src: list[int] = []
        new: list[int] = []
        for uid in sorted(uids):
            msg = source.messages.get(uid)
            if msg is None:
                continue
            src.append(uid)
            new.append(self.deliver(dest_name, self.blobs[msg.blob], msg.flags, msg.internaldate))
        return CopyResult(dest.uidvalidity, src, new)

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        self.calls.append(("move", mailbox_id, list(uids), dest_name))
        result = self._copy(mailbox_id, uids, dest_name)
        source = self._by_id(mailbox_id)
        for uid in result.source_uids:
            del source.messages[uid]
            source.modseq += 1
            source.vanished[uid] = source.modseq
            self._emit(MailboxEvent(source.id, EventKind.REMOVED, uid, modseq=source.modseq))
        return result

    def _headers(self, box: _Box, uid: int) -> list[tuple[str, str]]:
        data = self.blobs[box.messages[uid].blob]
        end = find_body_start(data, 0, len(data))
        return [(f.name, decode_header_value(f.value)) for f in parse_fields(data, 0, end)]

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        self.calls.append(("search_header", mailbox_id, field, text))
        box = self._by_id(mailbox_id)
        needle = text.casefold()
        return {
            uid
            for uid in box.messages
            if any(n == field.value and needle in v.casefold() for n, v in self._headers(box, uid))
        }

    async def search_text(
        self, who: Identity, mailbox_id: int, part: str, needle: str
    ) -> set[int] | None:
        # No substring index here: every search reads the messages.
        self.calls.append(("search_text", mailbox_id, part, needle))
        return None

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        self.calls.append(("search_sent", mailbox_id, since, before))
        box = self._by_id(mailbox_id)
        out = set()
        for uid in box.messages:
            for name, value in self._headers(box, uid):
                if name != "date":
                    continue
                try:
                    day = email.utils.parsedate_to_datetime(value).date()
                except (TypeError, ValueError):
                    continue
                if (since is None or day >= since) and (before is None or day < before):
                    out.add(uid)
        return out

    async def vanished(self, who: Identity, mailbox_id: int, since: int) -> list[int]:
        self.calls.append(("vanished", mailbox_id, since))
        box = self._by_id(mailbox_id)
        return sorted(uid for uid, modseq in box.vanished.items() if modseq > since)

    async def box_size(self, who: Identity, mailbox_id: int) -> int:
        self.calls.append(("box_size", mailbox_id))
        return sum(m.size for m in self._by_id(mailbox_id).messages.values())

    async def recent_mark(self, who: Identity, mailbox_id: int) -> int:
        self.calls.append(("recent_mark", mailbox_id))
        return self.recent_marks.get(mailbox_id, 0)

    async def claim_recent(self, who: Identity, mailbox_id: int, upto: int) -> int:
        self.calls.append(("claim_recent", mailbox_id, upto))
        mark = self.recent_marks.get(mailbox_id, 0)
        self.recent_marks[mailbox_id] = max(mark, upto)
        return mark

    def subscribe(self, mailbox_id: int, listener: Listener) -> Unsubscribe:
        self.listeners.setdefault(mailbox_id, []).append(listener)

        def unsubscribe() -> None:
            self.listeners[mailbox_id].remove(listener)

        return unsubscribe
