"""The delegation rules, in the domain alone: who may grant what to whom, what a
revocation ends, what a delegate sees and may do, and sending for a lawyer
(an in-memory address book and a recording filer stand in for storage)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from palais.mailbox.boxes import BoxKind, BoxRef
from palais.mailbox.delegated_access import DelegatedAccess
from palais.mailbox.delegation import (
    ActedFor,
    Delegation,
    DelegationRefused,
    Right,
    acting_for,
    check_sender_header,
    decide_grant,
    decide_revocation,
    delegated_box,
    delegated_name,
    delegated_parents,
    right_for,
    sending_for,
    shown_boxes,
)
from palais.mailbox.enrolment import AccountFacts
from palais.mailbox.errors import ErrorKind, NoSuchMailbox, PalaisError, SenderMismatch
from palais.mailbox.evidence import ReceiptOrder
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import AppendResult, Entry, FlagMode, MailboxInfo, StoreResult
from palais.mailbox.ports import MailAccess
from palais.mailbox.routing import Addressee, AddresseeKind, FilingPlan
from palais.mailbox.submission import SubmissionDesk

N = "2025-0000138"
M = "2025-0000200"
SERVICE = "greffe@greffes.test"
LAWYER = AccountFacts(1, "me.a@avocats.test", Role.AVOCAT, "Me A", True)
STAFF = AccountFacts(2, "collab@avocats.test", Role.COLLABORATEUR, "Collab", True)
COLLEAGUE = AccountFacts(3, "me.b@avocats.test", Role.AVOCAT, "Me B", True)
CLERK = AccountFacts(4, "g@justice.test", Role.GREFFIER, "G", True, service=SERVICE)
GONE = AccountFacts(5, "old@avocats.test", Role.COLLABORATEUR, "Old", False)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def grant(
    lawyer: AccountFacts | None = LAWYER,
    delegate: AccountFacts | None = STAFF,
    *,
    right: Right = Right.READ,
    dossiers: Sequence[str] = (),
    theirs: Sequence[str] = (N, M),
    known: Sequence[str] = (N, M),
    existing: Sequence[Delegation] = (),
) -> Any:
    return decide_grant(
        lawyer,
        delegate,
        lawyer_address="me.a@avocats.test",
        delegate_address="collab@avocats.test",
        right=right,
        dossiers=dossiers,
        lawyer_dossiers=theirs,
        known_dossiers=known,
        existing=existing,
    )


def held(dossier: str | None, right: Right, lawyer: str = LAWYER.address) -> Delegation:
    return Delegation(lawyer, STAFF.address, dossier, right, T0, "Me A")


# -- granting -----------------------------------------------------------------------


def test_a_lawyer_grants_all_dossiers_or_some_to_staff_or_a_colleague() -> None:
    everything = grant()
    assert everything.dossiers == (None,) and everything.right is Right.READ
    some = grant(LAWYER, COLLEAGUE, dossiers=[N, N], right=Right.WRITE)
    assert some.dossiers == (N,) and some.delegate == COLLEAGUE


@pytest.mark.parametrize(
    ("lawyer", "delegate", "dossiers", "theirs", "known", "says"),
    [
        (None, STAFF, (), (), (), "no account 'me.a@avocats.test'"),
        (LAWYER, None, (), (), (), "no account 'collab@avocats.test'"),
        (LAWYER, LAWYER, (), (), (), "cannot delegate to themself"),
        (STAFF, COLLEAGUE, (), (), (), "only a lawyer (avocat) delegates"),
        (LAWYER, CLERK, (), (), (), "only to a collaborateur or another avocat"),
        (LAWYER, GONE, (), (), (), "is deactivated"),
        (LAWYER, STAFF, ("138",), (), (), "not a dossier number"),
        (LAWYER, STAFF, ("2099-0000001",), (), (), "no dossier 2099-0000001"),
        (LAWYER, STAFF, (M,), (N,), (N, M), f"takes no part in dossier {M}"),
    ],
)
def test_a_grant_the_rules_refuse_says_why(
    lawyer: AccountFacts | None,
    delegate: AccountFacts | None,
    dossiers: tuple[str, ...],
    theirs: tuple[str, ...],
    known: tuple[str, ...],
    says: str,
) -> None:
    with pytest.raises(DelegationRefused) as refused:
        grant(lawyer, delegate, dossiers=dossiers, theirs=theirs, known=known)
    assert says in refused.value.text
    assert refused.value.kind is ErrorKind.NOT_ALLOWED


def test_granting_again_changes_the_right_or_is_refused_as_already_held() -> None:
    upgrade = grant(dossiers=[N], right=Right.WRITE, existing=[held(N, Right.READ)])
    assert upgrade.dossiers == (N,) and upgrade.replaces == (held(N, Right.READ),)
    with pytest.raises(DelegationRefused, match="already holds read on dossier"):
        grant(dossiers=[N], existing=[held(N, Right.READ)])


# -- revoking -----------------------------------------------------------------------


def revoke(dossiers: Sequence[str], existing: Sequence[Delegation]) -> Any:
    return decide_revocation(
        LAWYER,
        STAFF,
        lawyer_address=LAWYER.address,
        delegate_address=STAFF.address,
        dossiers=dossiers,
        existing=existing,
    )


def test_a_revocation_ends_everything_or_the_dossiers_named() -> None:
    both = [held(N, Right.READ), held(M, Right.WRITE)]
    assert revoke([], both).revoked == tuple(both)
    assert revoke([M], both).revoked == (held(M, Right.WRITE),)
    with pytest.raises(DelegationRefused, match="delegated nothing"):
        revoke([], [])
    with pytest.raises(DelegationRefused, match=f"not delegated dossier {M}"):
        revoke([M], [held(N, Right.READ)])
    with pytest.raises(DelegationRefused, match="revoke the whole delegation"):
        revoke([N], [held(None, Right.READ)])


# -- what a delegate sees and may do ----------------------------------------------


def test_grants_add_up_the_strongest_right_wins_and_only_for_their_lawyer() -> None:
    grants = [held(None, Right.READ), held(N, Right.WRITE)]
    assert right_for(grants, LAWYER.address, N) is Right.WRITE
    assert right_for(grants, LAWYER.address, M) is Right.READ
    assert right_for(grants, COLLEAGUE.address, N) is None
    assert right_for([held(N, Right.WRITE)], LAWYER.address, M) is None
    assert right_for([held(N, Right.WRITE)], LAWYER.address, None) is None


def test_the_lawyers_dossiers_show_under_a_prefix_naming_the_lawyer() -> None:
    name = delegated_name(LAWYER.address, f"Dossiers/{N}/Reçus")
    assert name == f"Délégations/{LAWYER.address}/Dossiers/{N}/Reçus"
    assert delegated_box(name) == (LAWYER.address, BoxRef(BoxKind.RECUS, N))
    assert delegated_box("Dossiers/2025-0000138/Reçus") is None
    for not_a_box in ("Délégations/x", f"Délégations/{LAWYER.address}/INBOX"):
        with pytest.raises(NoSuchMailbox):
            delegated_box(not_a_box)
    assert delegated_parents([name]) == [
        "Délégations",
        f"Délégations/{LAWYER.address}",
        f"Délégations/{LAWYER.address}/Dossiers",
        f"Délégations/{LAWYER.address}/Dossiers/{N}",
    ]
    boxes = [BoxRef(BoxKind.RECUS, None), BoxRef(BoxKind.RECUS, N), BoxRef(BoxKind.RECUS, M)]
    shown = shown_boxes([held(N, Right.READ)], LAWYER.address, boxes)
    assert shown == [(BoxRef(BoxKind.RECUS, N), Right.READ)]


def identity(facts: AccountFacts) -> Identity:
    return Identity(
        facts.account_id,
        facts.address,
        facts.role,
        facts.display_name,
        str(facts.account_id) * 64,
        facts.mailbox_owner,
    )


def test_sending_for_a_lawyer_needs_write_on_the_dossier() -> None:
    who = identity(STAFF)
    assert sending_for(who, LAWYER.address, [held(N, Right.WRITE)], N) is Right.WRITE
    cases: list[tuple[type[PalaisError], Any, str]] = [
        (SenderMismatch, lambda: sending_for(who, COLLEAGUE.address, [held(N, Right.WRITE)]),
         "has not delegated to you"),
        (DelegationRefused, lambda: sending_for(who, LAWYER.address, [held(N, Right.READ)]),
         "reading only"),
        (DelegationRefused, lambda: sending_for(who, LAWYER.address, [held(N, Right.WRITE)], M),
         f"sending in dossier {M}"),
        (DelegationRefused, lambda: check_sender_header(who, LAWYER.address, [COLLEAGUE.address]),
         "must say Sender"),
    ]  # fmt: skip
    for kind, act, says in cases:
        with pytest.raises(kind) as refused:
            act()
        assert says in refused.value.text
    assert check_sender_header(who, LAWYER.address, [STAFF.address]) is True
    assert check_sender_header(who, LAWYER.address, []) is False
    acting = acting_for(who, LAWYER.address)
    assert (acting.address, acting.mailbox_owner) == (STAFF.address, LAWYER.address)


# -- the submission desk sending for a lawyer -------------------------------------------

DOSSIER = Addressee(f"{N}@dossiers.test", AddresseeKind.DOSSIER, SERVICE, dossier=N)
OTHER = Addressee(f"{M}@dossiers.test", AddresseeKind.DOSSIER, SERVICE, dossier=M)
KNOWN = {a.address: a for a in (DOSSIER, OTHER)} | {
    a.address: Addressee(a.address, AddresseeKind.PERSON, a.address)
    for a in (LAWYER, STAFF, COLLEAGUE)
}
MEMBERS = {N: frozenset({LAWYER.address, SERVICE}), M: frozenset({LAWYER.address, SERVICE})}


class Book:
    async def resolve(self, address: str) -> Addressee | None:
        return KNOWN.get(address)

    async def participants(self, number: str) -> frozenset[str]:
        return MEMBERS.get(number, frozenset())


@dataclass
class Grants:
    grants: tuple[Delegation, ...]

    async def held_by(self, delegate: str) -> tuple[Delegation, ...]:
        return tuple(d for d in self.grants if d.delegate == delegate)


@dataclass(frozen=True)
class Filing:
    message_id: int
    sha256: str
    resent: bool = False


@dataclass
class Filer:
    handed: list[tuple[Identity, bytes, FilingPlan]] = field(default_factory=list)

    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
        *,
        resend_since: datetime | None = None,
        arrival: str | None = None,
    ) -> Filing:
        self.handed.append((who, data, plan))
        return Filing(7, hashlib.sha256(data).hexdigest())


def message(author: str, sender: str | None = None, number: str = N) -> bytes:
    head = f"From: {author}\r\n" + (f"Sender: {sender}\r\n" if sender else "")
    return (head + f"Subject: [{number}] conclusions\r\n\r\ncorps\r\n").encode()


def send(
    grants: Sequence[Delegation], mail_from: str, data: bytes, rcpt: str = DOSSIER.address
) -> tuple[Filer, Any]:
    filer = Filer()
    desk = SubmissionDesk(Book(), filer, max_size=10_000, delegations=Grants(tuple(grants)))

    async def steps() -> Any:
        submission = await desk.open(identity(STAFF), mail_from)
        await submission.add_recipient(rcpt)
        return await submission.accept(data)

    return filer, asyncio.run(steps())


def refusal(grants: Sequence[Delegation], mail_from: str, data: bytes, rcpt: str = "") -> str:
    with pytest.raises(PalaisError) as refused:
        send(grants, mail_from, data, rcpt or DOSSIER.address)
    assert refused.value.kind in (ErrorKind.NOT_ALLOWED, ErrorKind.SENDER_MISMATCH)
    return refused.value.text


@pytest.mark.parametrize("mail_from", [LAWYER.address, STAFF.address])
def test_a_delegate_sends_for_the_lawyer_filed_in_the_lawyers_envoyes(mail_from: str) -> None:
    filer, accepted = send([held(N, Right.WRITE)], mail_from, message(LAWYER.address))
    ((who, data, plan),) = filer.handed
    assert (who.address, who.mailbox_owner) == (STAFF.address, LAWYER.address)
    assert data.startswith(f"Sender: <{STAFF.address}>\r\n".encode())  # added when missing
    assert plan.destinations[0].owner == LAWYER.address
    assert plan.destinations[0].kind is BoxKind.ENVOYES
    (receipt,) = [r for r in plan.records if isinstance(r, ReceiptOrder)]
    assert receipt.sender.address == LAWYER.address and receipt.sender.authentication is None
    assert receipt.delegate is not None and receipt.delegate.address == STAFF.address
    assert receipt.holders == (LAWYER.address,)
    (acted,) = [r for r in plan.records if isinstance(r, ActedFor)]
    assert acted.text == f"{STAFF.address} for {LAWYER.address}" and acted.dossier == N
    assert accepted.plan is plan


def test_a_sender_field_already_right_is_kept_as_it_is() -> None:
    data = message(LAWYER.address, STAFF.address)
    filer, _ = send([held(N, Right.WRITE)], STAFF.address, data)
    assert filer.handed[0][1] == data


def test_sending_for_a_lawyer_is_refused_without_the_right_delegation() -> None:
    lawyer = LAWYER.address
    assert "reading only" in refusal([held(N, Right.READ)], lawyer, message(lawyer))
    assert "dossier " + M in refusal(
        [held(N, Right.WRITE)], lawyer, message(lawyer, number=M), OTHER.address
    )
    assert "has not delegated" in refusal([], lawyer, message(lawyer))
    assert "must say From" in refusal([held(N, Right.WRITE)], lawyer, message(COLLEAGUE.address))
    assert "must say Sender" in refusal(
        [held(N, Right.WRITE)], lawyer, message(lawyer, COLLEAGUE.address)
    )
    # The delegate's own envelope: a From naming a lawyer who delegated nothing.
    assert "is not your address" in refusal(
        [held(N, Right.WRITE)], STAFF.address, message(COLLEAGUE.address)
    )
    # Standing in for a lawyer of the dossier, the message must say it is for them.
    assert "take no part" in refusal([held(N, Right.WRITE)], STAFF.address, message(STAFF.address))


# -- the delegate's IMAP view (DelegatedAccess over a store in memory) -------------


@dataclass
class Boxes:
    """A store's boxes per owner; records who changed what, as whose mailbox."""

    owners: dict[str, list[MailboxInfo]]
    changes: list[tuple[str, str, str]] = field(default_factory=list)

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        return list(self.owners.get(who.mailbox_owner, []))

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        for info in self.owners.get(who.mailbox_owner, []):
            if info.name == name:
                return info
        raise NoSuchMailbox(f"No mailbox named {name}")

    async def store_flags(self, who: Identity, mailbox_id: int, *args: Any) -> StoreResult:
        self.changes.append((who.address, who.mailbox_owner, str(mailbox_id)))
        return StoreResult(updated=[Entry(1, frozenset({"\\Flagged"}), 2)])

    async def append_all(
        self, who: Identity, name: str, messages: Sequence[Any]
    ) -> list[AppendResult]:
        self.changes.append((who.address, who.mailbox_owner, name))
        return [AppendResult(1, n + 1) for n in range(len(messages))]


def box(id: int, name: str) -> MailboxInfo:
    return MailboxInfo(id, name, 1, 1, 1, 0, 0)


def delegated_view(grants: Grants) -> tuple[DelegatedAccess, Boxes, list[ActedFor]]:
    boxes = Boxes(
        {
            LAWYER.address: [
                box(1, "INBOX"),
                box(2, f"Dossiers/{N}/Reçus"),
                box(3, f"Dossiers/{M}/Reçus"),
            ],
            STAFF.address: [box(9, "INBOX")],
        }
    )
    acts: list[ActedFor] = []

    async def record(act: ActedFor) -> None:
        acts.append(act)

    return DelegatedAccess(cast(MailAccess, boxes), grants, record), boxes, acts


def test_a_delegate_lists_the_delegated_dossiers_read_only_or_not_and_acts_as_the_lawyer() -> None:
    grants = Grants((held(N, Right.WRITE), held(M, Right.READ)))
    view, boxes, acts = delegated_view(grants)
    who = identity(STAFF)
    prefix = f"Délégations/{LAWYER.address}/Dossiers"

    async def steps() -> None:
        listed = {i.name: i for i in await view.list_mailboxes(who)}
        assert f"{LAWYER.address}/INBOX" not in " ".join(listed)  # never the global views
        assert listed[f"{prefix}/{N}/Reçus"].read_only is False
        assert listed[f"{prefix}/{M}/Reçus"].read_only is True
        assert listed["Délégations"].selectable is False
        write = await view.mailbox(who, f"{prefix}/{N}/Reçus")
        read = await view.mailbox(who, f"{prefix}/{M}/Reçus")
        await view.store_flags(who, write.id, [1], FlagMode.ADD, frozenset({"\\Flagged"}))
        assert boxes.changes[-1] == (STAFF.address, LAWYER.address, str(write.id))
        with pytest.raises(DelegationRefused):
            await view.store_flags(who, read.id, [1], FlagMode.ADD, frozenset({"\\Flagged"}))
        with pytest.raises(DelegationRefused):
            await view.append_all(who, f"{prefix}/{M}/Reçus", [(b"x", frozenset(), None)])
        done = await view.append_all(who, f"{prefix}/{N}/Reçus", [(b"x", frozenset(), None)] * 2)
        assert len(done) == 2 and boxes.changes[-1][1:] == (LAWYER.address, f"Dossiers/{N}/Reçus")
        assert [(a.act, a.text) for a in acts] == [
            ("flags", f"{STAFF.address} for {LAWYER.address}"),
            ("append", f"{STAFF.address} for {LAWYER.address}"),
        ]
        # Revoked: the boxes go, and a box already selected answers no more.
        grants.grants = ()
        assert [i.name for i in await view.list_mailboxes(who)] == ["INBOX"]
        with pytest.raises(NoSuchMailbox):
            await view.mailbox(who, f"{prefix}/{N}/Reçus")
        with pytest.raises(NoSuchMailbox):
            await view.store_flags(who, write.id, [1], FlagMode.ADD, frozenset({"\\Seen"}))

    asyncio.run(steps())
