"""A delegate's mail: their own boxes, and the lawyers' dossiers delegated to them.

``DelegatedAccess`` is the ``MailAccess`` the IMAP front-end is given. For an
identity holding no delegation it adds one dictionary look-up per call on a
box and nothing else. A delegate additionally sees, under
``Délégations/<lawyer>/``, the dossier boxes of each lawyer who delegated to
them (``palais.mailbox.delegation``): read-only with the right "read"
(SELECT answers [READ-ONLY], a FETCH sets no \\Seen; STORE, EXPUNGE, MOVE and
APPEND are refused), with "write" acting on the lawyer's boxes as the
lawyer's mailbox, each act written to the audit log as "X for Y".

Every call on a delegated box asks what the delegate holds now (cached by
the store for a few seconds): after a revocation the boxes leave the list
and a selected one answers NO [NONEXISTENT] to the next command, without a
restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any, Protocol

from palais.mailbox.boxes import parse_box_name
from palais.mailbox.delegation import (
    ActedFor,
    Delegation,
    DelegationRefused,
    Right,
    acting_for,
    delegated_box,
    delegated_name,
    delegated_parents,
    lawyers_shown,
    right_for,
)
from palais.mailbox.errors import CannotDoThat, NoSuchMailbox
from palais.mailbox.identity import Identity
from palais.mailbox.model import (
    AppendResult,
    CopyResult,
    FlagMode,
    HeaderField,
    MailboxEvent,
    MailboxInfo,
    MessageRecord,
    StoreResult,
)
from palais.mailbox.ports import EntryTable, MailAccess, Unsubscribe

__all__ = ["DelegatedAccess", "DelegationBook"]


class DelegationBook(Protocol):
    async def held_by(self, delegate: str) -> tuple[Delegation, ...]:
        """The delegations ``delegate`` holds now (an answer a few seconds old at most)."""
        ...


RecordAct = Callable[[ActedFor], Awaitable[None]]


class DelegatedAccess:
    """``MailAccess`` with the delegated boxes added (see the module's text)."""

    def __init__(self, inner: MailAccess, book: DelegationBook, record: RecordAct) -> None:
        self._inner = inner
        self._book = book
        self._record = record
        # Box id -> (lawyer, dossier) of every delegated box shown so far: a
        # box is always named (LIST, SELECT, STATUS) before its id is used.
        self._delegated: dict[int, tuple[str, str | None]] = {}

    def __getattr__(self, name: str) -> Any:
        # Whatever else the store offers (a method added to the port later):
        # calls on a box (who, box id, ...) act as the box's owner when the
        # box is delegated, read-only.
        found = getattr(self._inner, name)
        if not callable(found):
            return found

        async def on_box(who: Identity, mailbox_id: int, *args: Any, **kwargs: Any) -> Any:
            acting = await self._acting(who, mailbox_id)
            return await found(acting, mailbox_id, *args, **kwargs)

        return on_box

    # -- who acts ------------------------------------------------------------

    async def _acting(self, who: Identity, mailbox_id: int, *, write: bool = False) -> Identity:
        """``who``, or ``who`` acting on the lawyer's mailbox when the box is delegated."""
        found = self._delegated.get(mailbox_id)
        if found is None or found[0] == who.mailbox_owner:
            return who
        lawyer, dossier = found
        right = right_for(await self._book.held_by(who.address), lawyer, dossier)
        if right is None:
            raise NoSuchMailbox(
                "No such mailbox (the delegation has ended)",
                reason=f"{who.address} on box {mailbox_id} of {lawyer}: no delegation",
            )
        if write and right is not Right.WRITE:
            raise DelegationRefused(
                f"Your delegation from <{lawyer}> allows reading only",
                reason=f"{who.address} tried to change box {mailbox_id} of {lawyer}",
            )
        return acting_for(who, lawyer)

    async def _acted(
        self, acting: Identity, who: Identity, act: str, mailbox_id: int, count: int
    ) -> None:
        if acting is who:
            return
        lawyer, dossier = self._delegated[mailbox_id]
        await self._record(ActedFor(who.address, lawyer, act, dossier, {"messages": count}))

    # -- boxes ---------------------------------------------------------------

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        own = await self._inner.list_mailboxes(who)
        held = await self._book.held_by(who.address)
        if not held:
            return own
        shown: list[MailboxInfo] = []
        for lawyer in lawyers_shown(held):
            for info in await self._inner.list_mailboxes(acting_for(who, lawyer)):
                if not info.selectable:
                    continue
                try:
                    ref = parse_box_name(info.name)
                except NoSuchMailbox:
                    continue
                right = None if ref.dossier is None else right_for(held, lawyer, ref.dossier)
                if right is None:
                    continue
                self._delegated[info.id] = (lawyer, ref.dossier)
                shown.append(_as_delegated(info, lawyer, right))
        nodes = [_node(name) for name in delegated_parents(i.name for i in shown)]
        return own + sorted(nodes + shown, key=lambda i: i.name)

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        found = delegated_box(name)
        if found is None:
            return await self._inner.mailbox(who, name)
        lawyer, ref = found
        lawyer = lawyer.lower()
        right = right_for(await self._book.held_by(who.address), lawyer, ref.dossier)
        if right is None or lawyer == who.mailbox_owner:
            raise NoSuchMailbox(
                f"No mailbox named {name}", reason=f"{who.address}: no delegation from {lawyer}"
            )
        info = await self._inner.mailbox(acting_for(who, lawyer), ref.name)
        self._delegated[info.id] = (lawyer, ref.dossier)
        return _as_delegated(info, lawyer, right)

    # -- reads ---------------------------------------------------------------

    async def entries(self, who: Identity, mailbox_id: int) -> EntryTable:
        return await self._inner.entries(await self._acting(who, mailbox_id), mailbox_id)

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        return await self._inner.records(await self._acting(who, mailbox_id), mailbox_id, uids)

    async def read(self, blob: str) -> bytes:
        return await self._inner.read(blob)

    async def read_header(self, blob: str, header_size: int) -> bytes:
        return await self._inner.read_header(blob, header_size)

    def recall(self, blob: str, aspect: str) -> bytes | None:
        return self._inner.recall(blob, aspect)

    def remember(self, blob: str, aspect: str, value: bytes) -> None:
        self._inner.remember(blob, aspect, value)

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        acting = await self._acting(who, mailbox_id)
        return await self._inner.search_header(acting, mailbox_id, field, text)

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        acting = await self._acting(who, mailbox_id)
        return await self._inner.search_sent(acting, mailbox_id, since, before)

    def subscribe(self, mailbox_id: int, listener: Callable[[MailboxEvent], None]) -> Unsubscribe:
        return self._inner.subscribe(mailbox_id, listener)

    # -- changes ---------------------------------------------------------------

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        acting = await self._acting(who, mailbox_id, write=True)
        done = await self._inner.store_flags(acting, mailbox_id, uids, mode, flags, unchanged_since)
        if done.updated:
            await self._acted(acting, who, "flags", mailbox_id, len(done.updated))
        return done

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        acting = await self._acting(who, mailbox_id, write=True)
        gone = await self._inner.expunge(acting, mailbox_id, uids)
        if gone:
            await self._acted(acting, who, "expunge", mailbox_id, len(gone))
        return gone

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        found = delegated_box(mailbox_name)
        if found is None:
            return await self._inner.append(who, mailbox_name, data, flags, internaldate)
        box = await self.mailbox(who, mailbox_name)  # refuses without a delegation
        acting = await self._acting(who, box.id, write=True)
        done = await self._inner.append(acting, found[1].name, data, flags, internaldate)
        await self._acted(acting, who, "append", box.id, 1)
        return done

    async def append_all(
        self,
        who: Identity,
        mailbox_name: str,
        messages: Sequence[tuple[bytes, frozenset[str], datetime | None]],
    ) -> list[AppendResult]:
        found = delegated_box(mailbox_name)
        if found is None:
            return await self._inner.append_all(who, mailbox_name, messages)
        box = await self.mailbox(who, mailbox_name)
        acting = await self._acting(who, box.id, write=True)
        done = await self._inner.append_all(acting, found[1].name, messages)
        await self._acted(acting, who, "append", box.id, len(done))
        return done

    async def _transfer(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str, *, move: bool
    ) -> CopyResult:
        acting = await self._acting(who, mailbox_id, write=True)
        found = delegated_box(dest_name)
        if found is None and acting is who:
            if move:
                return await self._inner.move(who, mailbox_id, uids, dest_name)
            return await self._inner.copy(who, mailbox_id, uids, dest_name)
        source_owner = acting.mailbox_owner
        if found is None or found[0].lower() != source_owner:
            # A lawyer's message stays in the lawyer's boxes, and one's own in one's own.
            raise CannotDoThat(
                "Messages move only between boxes of the same mailbox",
                reason=f"{who.address}: box {mailbox_id} of {source_owner} to {dest_name!r}",
            )
        dest = await self.mailbox(who, dest_name)
        await self._acting(who, dest.id, write=True)
        inner_name = found[1].name
        if move:
            done = await self._inner.move(acting, mailbox_id, uids, inner_name)
        else:
            done = await self._inner.copy(acting, mailbox_id, uids, inner_name)
        if done.source_uids:
            await self._acted(
                acting, who, "move" if move else "copy", mailbox_id, len(done.source_uids)
            )
        return done

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._transfer(who, mailbox_id, uids, dest_name, move=False)

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._transfer(who, mailbox_id, uids, dest_name, move=True)


def _as_delegated(info: MailboxInfo, lawyer: str, right: Right) -> MailboxInfo:
    """The lawyer's box as the delegate sees it: renamed, read-only unless "write"."""
    return replace(
        info,
        name=delegated_name(lawyer, info.name),
        special_use=None,  # a client wants its own Sent, Drafts and Trash, not the lawyer's
        read_only=right is not Right.WRITE,
    )


def _node(name: str) -> MailboxInfo:
    return MailboxInfo(
        id=0,
        name=name,
        uidvalidity=0,
        uidnext=0,
        highestmodseq=0,
        messages=0,
        unseen=0,
        selectable=False,
    )
