"""COPY, MOVE and their UID forms, answering with UIDPLUS COPYUID."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palais.gateway.imap import codes, searchres
from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.fetch import resolve
from palais.gateway.imap.commands.registry import Reply, bad, command, no, ok
from palais.gateway.imap.parser import Args
from palais.gateway.imap.sequence import SequenceSet, SequenceSetError, format_pairs
from palais.gateway.imap.states import SELECTED_ONLY
from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.model import CopyResult, EventKind, MailboxEvent

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


def _copyuid(result: CopyResult) -> bytes:
    return b"COPYUID %d %s %s" % (
        result.uidvalidity,
        format_pairs(result.source_uids),
        format_pairs(result.dest_uids),
    )


async def _transfer(
    session: Session, numbers: SequenceSet, dest: str, *, uid: bool, move: bool
) -> Reply:
    view = selected(session)
    verb = "MOVE" if move else "COPY"
    if move and view.read_only:
        # Read-only by permission (a delegation to read), not by EXAMINE: NOPERM.
        return no(
            "Mailbox is open read-only", codes.NOPERM if view.info.read_only else codes.CANNOT
        )
    try:
        pairs = resolve(session, numbers, uid=uid)
    except SequenceSetError as exc:
        return bad(str(exc))
    if not pairs:
        return ok(f"{verb} completed, nothing to do")
    uids = [u for _, u in pairs]
    who = identity(session)
    try:
        if move:
            result = await session.access.move(who, view.info.id, uids, dest)
        else:
            result = await session.access.copy(who, view.info.id, uids, dest)
    except NoSuchMailbox as exc:
        return no(exc.text, codes.TRYCREATE)
    if dest == view.info.name:
        for new_uid in result.dest_uids:
            view.on_event(MailboxEvent(view.info.id, EventKind.ARRIVED, new_uid))
    if not move:
        return ok("COPY completed", _copyuid(result) if result.dest_uids else None)
    if result.dest_uids:
        session.untagged(b"OK [" + _copyuid(result) + b"] Moved")
    pacer = session.pacer()
    # With QRESYNC enabled, one VANISHED rather than an EXPUNGE each (RFC 6851 4.3).
    for line in view.expunge_lines(result.source_uids, vanished=session.qresync):
        session.write(line)
        if pacer.due():
            await pacer.pause()
    return ok("MOVE completed")


@command("COPY", syntax=(searchres.sequence_set, Args.mailbox), states=SELECTED_ONLY)
async def copy(session: Session, tag: bytes, numbers: SequenceSet, dest: str) -> Reply:
    return await _transfer(session, numbers, dest, uid=False, move=False)


@command("UID COPY", syntax=(searchres.sequence_set, Args.mailbox), states=SELECTED_ONLY)
async def uid_copy(session: Session, tag: bytes, numbers: SequenceSet, dest: str) -> Reply:
    return await _transfer(session, numbers, dest, uid=True, move=False)


@command("MOVE", syntax=(searchres.sequence_set, Args.mailbox), states=SELECTED_ONLY)
async def move(session: Session, tag: bytes, numbers: SequenceSet, dest: str) -> Reply:
    return await _transfer(session, numbers, dest, uid=False, move=True)


@command("UID MOVE", syntax=(searchres.sequence_set, Args.mailbox), states=SELECTED_ONLY)
async def uid_move(session: Session, tag: bytes, numbers: SequenceSet, dest: str) -> Reply:
    return await _transfer(session, numbers, dest, uid=True, move=True)
