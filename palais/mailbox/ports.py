"""Ports the domain and the front-ends depend on; storage implements them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Protocol

from palais.mailbox.identity import Identity
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


class MailAccess(Protocol):
    """Everything an IMAP session asks of the mail store, for one identity.

    Mailbox names are full Unicode names with "/" as delimiter. Every
    method raises a ``palais.mailbox.errors.PalaisError`` subclass for a
    refusal the client should see (e.g. ``NoSuchMailbox``, ``CannotDoThat``,
    ``NotAllowed``); anything else is an internal failure.
    """

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        """Every box the identity sees, including non-selectable parents."""
        ...

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        """One box's current status; raises NoSuchMailbox."""
        ...

    async def entries(self, who: Identity, mailbox_id: int) -> list[Entry]:
        """All entries in UID order: uid, flags as this identity sees them, modseq."""
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

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult: ...

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        """Remove entries flagged \\Deleted (restricted to ``uids`` if given).

        Returns the expunged UIDs in ascending order.
        """
        ...

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult: ...

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult: ...

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        """Atomic move; the source entries are gone when this returns."""
        ...

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        """UIDs whose header field contains ``text`` (case-insensitive)."""
        ...

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        """UIDs whose Date: header falls in [since, before) (dates in the header's zone)."""
        ...

    def subscribe(self, mailbox_id: int, listener: Callable[[MailboxEvent], None]) -> Unsubscribe:
        """Be told of changes to a box made by any session (called on the event loop)."""
        ...
