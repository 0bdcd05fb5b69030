"""Ports the domain and the front-ends depend on; storage implements them.

``MailAccess``: an identity's mail (its boxes, entries, bytes, and the plans
that change them). ``MessageBytes``: where message bytes are kept, by
SHA-256. ``EventBus``: who hears of a change to a box. Storage gives the
single-node implementations (pack files, an in-process hub); the several-node
ones (PostgreSQL or S3 bytes, LISTEN/NOTIFY) plug in behind the same ports.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import (
    AppendResult,
    CopyResult,
    Entry,
    FlagMode,
    HeaderField,
    MailboxEvent,
    MailboxInfo,
    MessageRecord,
    StoreResult,
)

Unsubscribe = Callable[[], None]

_SEEN = "\\Seen"


class EntryTable:
    """Every entry of one box at one instant, in UID order, as compact arrays.

    A box's listing (UIDs, flags, modification sequences) without
    one Python object per message: ``uids`` (array "I"), ``modseqs`` (array
    "Q") and ``flag_ids`` (array "H" or "I"), an index into ``flag_sets`` (a
    box holds a handful of distinct flag sets). ``counts[i]`` is how many
    entries have ``flag_sets[i]``. A table is never modified once built: a
    store may hand the same one to everyone reading the box. Iterating gives
    ``Entry`` objects (convenient, not fast).
    """

    __slots__ = (
        "counts",
        "flag_ids",
        "flag_sets",
        "highestmodseq",
        "modseqs",
        "uidnext",
        "uids",
    )

    def __init__(
        self,
        uids: array[int],
        modseqs: array[int],
        flag_ids: array[int],
        flag_sets: Sequence[frozenset[str]],
        counts: Sequence[int],
        *,
        highestmodseq: int = 0,
        uidnext: int = 0,
    ) -> None:
        self.uids = uids
        self.modseqs = modseqs
        self.flag_ids = flag_ids
        self.flag_sets = tuple(flag_sets)
        self.counts = tuple(counts)
        # The box's own highestmodseq is at least its entries' (given by a store).
        self.highestmodseq = highestmodseq or max(modseqs, default=0)
        self.uidnext = max(uidnext, (uids[-1] + 1) if uids else 1)

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[int, frozenset[str], int]],
        *,
        highestmodseq: int = 0,
        uidnext: int = 0,
    ) -> EntryTable:
        """From (uid, flags, modseq) in ascending UID order."""
        uids: array[int] = array("I")
        modseqs: array[int] = array("Q")
        ids: list[int] = []
        index: dict[frozenset[str], int] = {}
        for uid, flags, modseq in entries:
            uids.append(uid)
            modseqs.append(modseq)
            ids.append(index.setdefault(flags, len(index)))
        counts = [0] * len(index)
        for i in ids:
            counts[i] += 1
        return cls(
            uids,
            modseqs,
            flag_id_array(ids, len(index)),
            list(index),
            counts,
            highestmodseq=highestmodseq,
            uidnext=uidnext,
        )

    def __len__(self) -> int:
        return len(self.uids)

    def __iter__(self) -> Iterator[Entry]:
        sets = self.flag_sets
        for uid, fid, modseq in zip(self.uids, self.flag_ids, self.modseqs, strict=True):
            yield Entry(uid, sets[fid], modseq)

    def flags_at(self, i: int) -> frozenset[str]:
        return self.flag_sets[self.flag_ids[i]]

    def index_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return None

    @property
    def unseen(self) -> int:
        return sum(
            n for n, flags in zip(self.counts, self.flag_sets, strict=True) if _SEEN not in flags
        )

    def first_unseen(self) -> int | None:
        """Index of the first entry without \\Seen."""
        found: int | None = None
        for fid, (n, flags) in enumerate(zip(self.counts, self.flag_sets, strict=True)):
            if n and _SEEN not in flags:
                stop = len(self.flag_ids) if found is None else found
                try:
                    found = self.flag_ids.index(fid, 0, stop)
                except ValueError:
                    continue
        return found


def flag_id_array(ids: Iterable[int], distinct: int) -> array[int]:
    """Flag-set numbers in the smallest array type that holds them."""
    return array("H" if distinct <= 0xFFFF else "I", ids)


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a message's bytes lie: a segment (file, object or row key), offset, length."""

    segment: str
    offset: int
    length: int


class BlobCorrupted(Exception):
    """Bytes read back do not match their SHA-256: disk damage or tampering."""


class MessageBytes(Protocol):
    """Message bytes, written in batches that share one sync, read by location.

    Bytes are appended before the rows that point at them commit, and
    ``sync`` makes them durable first; erasing overwrites bytes nobody holds.
    """

    def append_many(self, datas: Sequence[bytes]) -> list[BlobLocation]: ...

    def sync(self) -> None: ...

    def read(self, where: BlobLocation, sha256: str, *, length: int | None = None) -> bytes:
        """The bytes (``length`` of them, unchecked, if given); raises BlobCorrupted."""
        ...

    def erase(self, where: BlobLocation) -> None: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    """Changes to boxes, told to whoever watches them (on the event loop)."""

    def subscribe(
        self, mailbox_id: int, listener: Callable[[MailboxEvent], None]
    ) -> Unsubscribe: ...

    def publish(self, events: list[MailboxEvent]) -> None: ...


class SealedReceipt(Protocol):
    @property
    def data(self) -> bytes:
        """The receipt mail, CRLF, as stored and served."""
        ...

    @property
    def evidence(self) -> bytes:
        """The canonical evidence it carries: the evidence log's leaf."""
        ...

    @property
    def summary(self) -> MessageSummary:
        """Its header, as ``summarize`` reads it (known to whoever wrote it)."""
        ...


class Sealing(Protocol):
    def receipts(self) -> Sequence[SealedReceipt]:
        """The receipt mails, signed; raises ``TemporaryFailure`` if the key cannot sign."""
        ...


class EvidenceTree(Protocol):
    """The evidence log's Merkle tree as its compact range: what appending needs."""

    @property
    def size(self) -> int: ...

    def append(self, leaf_hash: str) -> None: ...

    def root(self) -> str:
        """The root hash, hex."""
        ...

    def serialized(self) -> str:
        """What ``EvidenceService.tree`` reads back."""
        ...


class EvidenceService(Protocol):
    """Seals receipts and keeps the evidence log's tree (``palais.pki``).

    Storage calls it inside the transaction of the act a receipt proves;
    a key that cannot sign raises ``TemporaryFailure`` and the act fails
    whole: nothing is accepted without its evidence.
    """

    @property
    def issuer(self) -> str: ...

    @property
    def issuer_certificate_sha256(self) -> str: ...

    @property
    def address(self) -> str:
        """The address receipts come from."""
        ...

    def seal_many(self, requests: Sequence[tuple[bytes, str]]) -> Sequence[SealedReceipt]:
        """The receipt mails of evidences (canonical bytes), each to its
        holder (an address), in order."""
        ...

    def seal_later(self, requests: Sequence[tuple[bytes, str]]) -> Sealing:
        """``seal_many``, begun now and finished when its receipts are asked
        for (the writing may go on meanwhile, elsewhere)."""
        ...

    def close(self) -> None:
        """Release what sealing holds (a worker process)."""
        ...

    def leaf_hash(self, evidence: bytes) -> str:
        """The log's hash of a leaf, hex."""
        ...

    def tree(self, frontier: str) -> EvidenceTree:
        """The log's tree from its stored compact range ("" for the empty tree)."""
        ...

    def sign_tree_head(self, size: int, root: str, when: datetime) -> tuple[str, str]:
        """The signed tree head: its document (text) and signature (base64)."""
        ...


class MailAccess(Protocol):
    """An identity's mail: its boxes and their entries, the messages' bytes,
    and the changes it may make (flags, deletion and restore, removal for
    good, drafts), each planned by the domain and carried out atomically.

    Box names are full Unicode names with "/" as delimiter. Every method
    raises a ``palais.mailbox.errors.PalaisError`` subclass for a refusal
    the user should see (e.g. ``NoSuchMailbox``, ``CannotDoThat``,
    ``NotAllowed``); anything else is an internal failure.
    """

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        """Every box the identity sees, including non-selectable parents."""
        ...

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        """One box's current status; raises NoSuchMailbox."""
        ...

    async def entries(self, who: Identity, mailbox_id: int) -> EntryTable:
        """All entries in UID order: uid, flags as this identity sees them, modseq.

        Cheap to call again while the box has not changed (a store may keep
        the table and bring it up to date from what changed since).
        """
        ...

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        """Metadata for these UIDs (missing ones are skipped), UID order."""
        ...

    async def read(self, blob: str) -> bytes:
        """The exact bytes of a message."""
        ...

    async def read_header(self, blob: str, header_size: int) -> bytes:
        """The header block only (cheaper than read() for ENVELOPE)."""
        ...

    def recall(self, blob: str, aspect: str) -> bytes | None:
        """A value remembered for this message's bytes, if still held."""
        ...

    def remember(self, blob: str, aspect: str, value: bytes) -> None:
        """Keep a value derived from this message's bytes (a front-end's
        rendering of its headers, say) for ``recall``; the store may drop it
        at any time and does when the bytes are erased."""
        ...

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """Change flags (``palais.mailbox.flags.plan_flag_change``), in both views."""
        ...

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        """Remove entries flagged \\Deleted (restricted to ``uids`` if given), as
        ``palais.mailbox.deletion.plan_expunge`` says: for good, or to Supprimés.

        Returns the removed UIDs in ascending order.
        """
        ...

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        """Save a draft, or recognise the user's own copy of a message sent
        (``palais.mailbox.drafts.plan_append``)."""
        ...

    async def append_all(
        self,
        who: Identity,
        mailbox_name: str,
        messages: Sequence[tuple[bytes, frozenset[str], datetime | None]],
    ) -> list[AppendResult]:
        """Several APPENDs (data, flags, internal date) to one box, all or none
        (IMAP MULTIAPPEND): one refused and nothing is kept."""
        ...

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        """A second placement of each message (``plan_move`` with ``keep_source``)."""
        ...

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        """Delete, restore or purge (``palais.mailbox.deletion.plan_move``), atomically;
        the source entries are gone when this returns."""
        ...

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        """UIDs whose header field contains ``text`` (case-insensitive)."""
        ...

    async def search_text(
        self, who: Identity, mailbox_id: int, part: str, needle: str
    ) -> set[int] | None:
        """UIDs that may contain ``needle`` (case-folded) in their "header",
        "body" or both ("text") as ``palais.mailbox.searchtext.documents``
        renders them: a superset of the matches, for the exact test to
        decide; None when the store has no index that can narrow this needle."""
        ...

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        """UIDs whose Date: header falls in [since, before) (dates in the header's zone)."""
        ...

    async def vanished(self, who: Identity, mailbox_id: int, since: int) -> list[int]:
        """UIDs that left the box at a MODSEQ above ``since``, ascending (what
        a resynchronising client is told is gone: IMAP QRESYNC)."""
        ...

    async def box_size(self, who: Identity, mailbox_id: int) -> int:
        """The total size in bytes of the box's messages (IMAP STATUS=SIZE)."""
        ...

    async def recent_mark(self, who: Identity, mailbox_id: int) -> int:
        """The highest UID of the box a session was told of first: the messages
        above it are recent (IMAP \\Recent), 0 for a box never selected."""
        ...

    async def claim_recent(self, who: Identity, mailbox_id: int, upto: int) -> int:
        """Raise the box's recent mark to ``upto``, atomically; the mark it had:
        the messages between the two are this caller's recent ones."""
        ...

    def subscribe(self, mailbox_id: int, listener: Callable[[MailboxEvent], None]) -> Unsubscribe:
        """Be told of changes to a box, whoever made them (called on the event loop)."""
        ...
