"""Delegations in the directory, on SQLite and PostgreSQL: grants and revocations
carried out with their audit events, what a delegate holds, and the delegate's
IMAP view acting on the lawyer's real boxes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection

from palais.mailbox.delegated_access import DelegatedAccess
from palais.mailbox.delegation import ActedFor, DelegationRefused, Right
from palais.mailbox.identity import Identity, Role
from palais.storage import Storage
from palais.storage.audit import query
from palais.storage.delegation import Delegations, write_acted_for
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import ME, NUMBER, OTHER, msg

STAFF = Identity(9, "collab@x.test", Role.COLLABORATEUR, "C", "9" * 64, "collab@x.test")


def add_staff(conn: Connection, _ctx: WriteContext) -> None:
    Directory.add_account(conn, address=STAFF.address, role=Role.COLLABORATEUR, display_name="C")


def test_grants_and_revocations_are_written_audited_and_seen_by_the_delegate(
    storage: Storage,
) -> None:
    book = Delegations(storage.reader, storage.commits)
    storage.mail.add_record_writer(ActedFor, write_acted_for)
    view = DelegatedAccess(storage.mail, book, book.acted)

    async def go() -> None:
        await storage.commits.submit(add_staff)
        granted = await book.grant(ME, STAFF.address, Right.READ, [NUMBER])
        assert [(d.dossier, d.right) for d in granted] == [(NUMBER, Right.READ)]
        assert [d.lawyer for d in await book.held_by(STAFF.address)] == [ME.address]
        with pytest.raises(DelegationRefused, match="already holds read"):
            await book.grant(ME, STAFF.address, Right.READ, [NUMBER])
        with pytest.raises(DelegationRefused, match="only a lawyer"):
            await book.grant(STAFF, ME.address, Right.READ, [])
        upgraded = await book.grant(ME, STAFF.address, Right.WRITE, [NUMBER])
        assert [(d.dossier, d.right) for d in upgraded] == [(NUMBER, Right.WRITE)]

        # The delegate's view: the lawyer's dossier boxes, writable with "write".
        names = [i.name for i in await view.list_mailboxes(STAFF)]
        drafts = f"Délégations/{ME.address}/Dossiers/{NUMBER}/Brouillons"
        assert drafts in names and f"Délégations/{OTHER.address}" not in " ".join(names)
        saved = await view.append(STAFF, drafts, msg(1), frozenset(), None)
        mine = await storage.mail.mailbox(ME, f"Dossiers/{NUMBER}/Brouillons")
        assert (mine.messages, saved.uid) == (1, 1)  # in the lawyer's own box

        revoked = await book.revoke(ME, STAFF.address, [])
        assert [d.dossier for d in revoked.revoked] == [NUMBER]
        assert await book.held_by(STAFF.address) == ()
        listed = await view.list_mailboxes(STAFF)
        assert not any(i.name.startswith("Délégations") for i in listed)
        with pytest.raises(DelegationRefused, match="delegated nothing"):
            await book.revoke(ME, STAFF.address, [])

    asyncio.run(go())
    events: list[Any] = list(query(storage.reader, account=ME.address))
    actions = [(e.action.value, e.reason) for e in events]
    x_for_y = f"{STAFF.address} for {ME.address}"
    assert actions == [
        ("delegation-granted", x_for_y),
        ("delegation-granted", x_for_y),
        ("acted-for", x_for_y),
        ("delegation-revoked", x_for_y),
    ]
    assert events[1].detail["replaced"][0]["rights"] == "read"
    assert events[2].actor == STAFF.address and events[2].detail["act"] == "append"


def test_a_deactivated_delegate_holds_nothing(storage: Storage) -> None:
    book = Delegations(storage.reader, storage.commits)

    async def go() -> None:
        await storage.commits.submit(add_staff)
        await book.grant(ME, STAFF.address, Right.WRITE, [])
        await storage.commits.submit(lambda conn, _ctx: Directory.deactivate(conn, STAFF.address))
        book.forget(STAFF.address)
        assert await book.held_by(STAFF.address) == ()
        assert await book.granted_by(ME) == []

    asyncio.run(go())
