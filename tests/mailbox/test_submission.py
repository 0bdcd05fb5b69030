"""The submission rules, one test each, in the domain alone.

An in-memory address book and a filer that records the plan it is handed
stand in for storage; no socket is opened (the guard below fails any test
that tries). The content rules of the header block (NUL, bare CR, a second
Subject) are tested in test_content.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from palais.mailbox.boxes import BoxKind
from palais.mailbox.errors import (
    ErrorKind,
    InvalidMessage,
    MessageTooBig,
    NotAllowed,
    PalaisError,
    SenderMismatch,
    UnknownRecipient,
)
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import MessageSummary
from palais.mailbox.routing import Addressee, AddresseeKind, FilingPlan
from palais.mailbox.submission import Accepted, Submission, SubmissionDesk

T = TypeVar("T")

N = "2025-0000138"
OTHER_N = "2025-0000999"
SERVICE = "cph-bordeaux@greffe.test"

AVOCAT = Identity(1, "avocat@barreau.test", Role.AVOCAT, "Me A", "a" * 64, "avocat@barreau.test")
CONFRERE = "confrere@barreau.test"
OUTSIDER = Identity(3, "tiers@barreau.test", Role.AVOCAT, "Me T", "c" * 64, "tiers@barreau.test")
CLERK = Identity(4, "greffier@greffe.test", Role.GREFFIER, "G", "d" * 64, SERVICE)

DOSSIER = Addressee(f"{N}@dossiers.test", AddresseeKind.DOSSIER, SERVICE, dossier=N)
OTHER_DOSSIER = Addressee(
    f"{OTHER_N}@dossiers.test", AddresseeKind.DOSSIER, SERVICE, dossier=OTHER_N
)
PEOPLE = {
    a.address: a
    for a in (
        DOSSIER,
        OTHER_DOSSIER,
        Addressee(CONFRERE, AddresseeKind.PERSON, CONFRERE),
        Addressee(OUTSIDER.address, AddresseeKind.PERSON, OUTSIDER.address),
        Addressee(SERVICE, AddresseeKind.SERVICE, SERVICE),
    )
}
MEMBERS = {
    N: frozenset({AVOCAT.address, CONFRERE, SERVICE}),
    OTHER_N: frozenset({OUTSIDER.address, SERVICE}),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The domain opens no connection: any attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the domain opened a socket")

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)
    yield


@dataclass
class AddressBook:
    """The directory in memory; counts the questions it is asked."""

    asked: list[tuple[str, str]] = field(default_factory=list)

    async def resolve(self, address: str) -> Addressee | None:
        self.asked.append(("resolve", address))
        return PEOPLE.get(address)

    async def participants(self, number: str) -> frozenset[str]:
        self.asked.append(("participants", number))
        return MEMBERS.get(number, frozenset())


@dataclass(frozen=True)
class Filing:
    message_id: int
    sha256: str
    resent: bool = False


@dataclass(frozen=True)
class Handed:
    who: Identity
    data: bytes
    summary: MessageSummary
    plan: FilingPlan
    resend_since: datetime | None


@dataclass
class RecordingFiler:
    """Files nothing; records what it was handed and answers like a store."""

    handed: list[Handed] = field(default_factory=list)

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
        self.handed.append(Handed(who, data, summary, plan, resend_since))
        return Filing(41 + len(self.handed), hashlib.sha256(data).hexdigest())


@dataclass
class Desk:
    book: AddressBook = field(default_factory=AddressBook)
    filer: RecordingFiler = field(default_factory=RecordingFiler)
    max_size: int = 10_000
    window: float = 3600.0

    def __post_init__(self) -> None:
        self.desk = SubmissionDesk(
            self.book, self.filer, max_size=self.max_size, resend_window=self.window
        )

    def start(self, who: Identity = AVOCAT, mail_from: str | None = None) -> Submission:
        return self.desk.submission(who, mail_from or who.address)

    def submit(
        self, data: bytes, *recipients: str, who: Identity = AVOCAT
    ) -> tuple[Submission, Accepted]:
        submission = self.start(who)

        async def steps() -> Accepted:
            for address in recipients:
                await submission.add_recipient(address)
            return await submission.accept(data)

        return submission, run(steps)


def run(steps: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await steps()

    return asyncio.run(main())


def add(submission: Submission, *addresses: str) -> None:
    async def steps() -> None:
        for address in addresses:
            await submission.add_recipient(address)

    run(steps)


def message(subject: str | None = f"[{N}] Conclusions", body: bytes = b"Corps\r\n") -> bytes:
    head = b"From: avocat@barreau.test\r\nMessage-ID: <m1@barreau.test>\r\n"
    if subject is not None:
        head += b"Subject: " + subject.encode() + b"\r\n"
    return head + b"\r\n" + body


def stored_subject(filer: RecordingFiler) -> str:
    return filer.handed[-1].summary.subject


# -- sender ------------------------------------------------------------------------


def test_the_sender_must_be_ones_own_address() -> None:
    desk = Desk()
    with pytest.raises(SenderMismatch) as refused:
        desk.start(AVOCAT, CONFRERE)
    assert refused.value.kind is ErrorKind.SENDER_MISMATCH
    assert desk.start(AVOCAT, "Avocat@Barreau.test").who is AVOCAT
    assert desk.book.asked == []  # the sender needs no directory question


def test_a_clerk_may_send_as_its_service_and_only_that() -> None:
    desk = Desk()
    assert desk.start(CLERK, SERVICE).who is CLERK
    assert desk.start(CLERK, CLERK.address).who is CLERK
    with pytest.raises(SenderMismatch):
        desk.start(CLERK, "autre-service@greffe.test")


# -- recipients ----------------------------------------------------------------------


def test_an_unknown_recipient_is_refused_and_the_others_stay() -> None:
    submission = Desk().start()
    add(submission, DOSSIER.address)
    with pytest.raises(UnknownRecipient) as refused:
        add(submission, "nobody@nowhere.test")
    assert refused.value.kind is ErrorKind.UNKNOWN_RECIPIENT
    assert "nobody@nowhere.test" in refused.value.text
    assert submission.recipients == (DOSSIER,)


def test_only_participants_may_write_to_a_dossier() -> None:
    submission = Desk().start(OUTSIDER)
    with pytest.raises(NotAllowed) as refused:
        add(submission, DOSSIER.address)
    assert refused.value.text == f"You take no part in dossier {N}"
    assert submission.recipients == () and submission.dossier is None


def test_a_clerk_writes_for_its_service_which_takes_part() -> None:
    submission = Desk().start(CLERK, SERVICE)
    add(submission, DOSSIER.address, CONFRERE)
    assert submission.dossier == N


def test_copies_go_only_to_participants_of_the_dossier() -> None:
    submission = Desk().start()
    add(submission, DOSSIER.address, CONFRERE)
    with pytest.raises(NotAllowed) as refused:
        add(submission, OUTSIDER.address)
    assert refused.value.text == f"<{OUTSIDER.address}> takes no part in dossier {N}"
    assert [r.address for r in submission.recipients] == [DOSSIER.address, CONFRERE]


def test_copies_given_before_the_dossier_are_checked_when_it_is_fixed() -> None:
    submission = Desk().start()
    add(submission, OUTSIDER.address)  # no dossier yet: nothing to check against
    with pytest.raises(NotAllowed) as refused:
        add(submission, DOSSIER.address)
    assert refused.value.text == f"<{OUTSIDER.address}> takes no part in dossier {N}"
    assert submission.dossier is None


def test_the_dossier_is_fixed_at_the_first_recipient_naming_one() -> None:
    submission = Desk().start(CLERK, SERVICE)
    add(submission, CONFRERE)
    assert submission.dossier is None
    add(submission, DOSSIER.address)
    assert submission.dossier == N
    add(submission, DOSSIER.address)  # the same dossier again is no conflict
    with pytest.raises(NotAllowed) as refused:
        add(submission, OTHER_DOSSIER.address)
    assert refused.value.text == "A message belongs to one dossier only"
    assert submission.dossier == N


def test_nothing_checked_at_rcpt_is_checked_again_at_data() -> None:
    desk = Desk()
    submission = desk.start()
    add(submission, DOSSIER.address, CONFRERE)
    asked = len(desk.book.asked)
    run(lambda: submission.accept(message()))
    assert len(desk.book.asked) == asked  # no directory question at DATA
    assert desk.book.asked.count(("participants", N)) == 1


def test_a_message_without_recipient_is_refused() -> None:
    desk = Desk()
    with pytest.raises(InvalidMessage):
        run(lambda: desk.start().accept(message()))
    assert desk.filer.handed == []


# -- the dossier named by the subject ---------------------------------------------------


def test_without_a_dossier_address_the_subject_names_the_dossier() -> None:
    desk = Desk()
    _, accepted = desk.submit(message(f"Re: [{N}] Pièces"), CONFRERE)
    assert accepted.plan.dossier == N
    assert stored_subject(desk.filer) == f"[{N}] Re: Pièces"


def test_the_dossier_named_by_the_subject_holds_to_the_same_rules() -> None:
    desk = Desk()
    with pytest.raises(NotAllowed) as refused:
        desk.submit(message(f"[{N}] x"), CONFRERE, who=OUTSIDER)
    assert refused.value.text == f"You take no part in dossier {N}"
    with pytest.raises(NotAllowed) as refused:
        desk.submit(message(f"[{N}] x"), OUTSIDER.address)
    assert refused.value.text == f"<{OUTSIDER.address}> takes no part in dossier {N}"
    for subject in ("Sans numéro", "[2025-0000001] inconnu", f"[{N}] et [{OTHER_N}]"):
        with pytest.raises(InvalidMessage) as unnamed:
            desk.submit(message(subject), CONFRERE)
        assert "name the dossier" in unnamed.value.text
    assert desk.filer.handed == []


# -- subject and body ---------------------------------------------------------------------


def test_another_dossiers_number_in_the_subject_is_refused() -> None:
    desk = Desk()
    with pytest.raises(InvalidMessage) as refused:
        desk.submit(message(f"Suite de [{OTHER_N}]"), DOSSIER.address)
    assert refused.value.text == (
        f"The subject names dossier {OTHER_N} but the message is for dossier {N}"
    )
    assert desk.filer.handed == []


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("Conclusions", f"[{N}] Conclusions"),
        (f"[{N}] Conclusions", f"[{N}] Conclusions"),
        (f"Re: [{N}] Conclusions", f"[{N}] Re: Conclusions"),
        (f"TR: Re:[{N}]Conclusions", f"[{N}] TR: Re:Conclusions"),
    ],
)
def test_the_subject_starts_with_the_dossier_number(sent: str, stored: str) -> None:
    desk = Desk()
    _, accepted = desk.submit(message(sent), DOSSIER.address)
    assert stored_subject(desk.filer) == stored
    data = desk.filer.handed[-1].data
    assert accepted.sha256 == hashlib.sha256(data).hexdigest() and accepted.size == len(data)


@pytest.mark.parametrize("subject", [None, "", "   "])
def test_an_empty_subject_is_refused(subject: str | None) -> None:
    desk = Desk()
    with pytest.raises(InvalidMessage) as refused:
        desk.submit(message(subject), DOSSIER.address)
    assert refused.value.text == "The subject is empty"
    assert desk.filer.handed == []


@pytest.mark.parametrize("body", [b"", b"\r\n", b" \r\n\t\r\n"])
def test_an_empty_body_is_refused(body: bytes) -> None:
    desk = Desk()
    with pytest.raises(InvalidMessage) as refused:
        desk.submit(message(body=body), DOSSIER.address)
    assert refused.value.text == "The message body is empty"
    assert desk.filer.handed == []


def test_the_size_limit() -> None:
    data = message()
    desk = Desk(max_size=len(data))
    desk.submit(data, DOSSIER.address)
    with pytest.raises(MessageTooBig) as refused:
        desk.submit(data + b"x", DOSSIER.address)
    assert refused.value.kind is ErrorKind.MESSAGE_TOO_BIG
    assert len(desk.filer.handed) == 1


# -- what the filer is handed -------------------------------------------------------------


def test_the_filer_is_handed_the_plan_and_the_resend_window() -> None:
    desk = Desk(window=600.0)
    before = datetime.now(UTC)
    _, accepted = desk.submit(message(), DOSSIER.address, CONFRERE, SERVICE)
    handed = desk.filer.handed[0]
    assert handed.who is AVOCAT and handed.plan is accepted.plan
    assert handed.plan.dossier == N
    assert [(d.owner, d.kind) for d in handed.plan.destinations] == [
        (AVOCAT.address, BoxKind.ENVOYES),
        (SERVICE, BoxKind.RECUS),  # the dossier's address and the service: one copy
        (CONFRERE, BoxKind.RECUS),
    ]
    assert handed.resend_since is not None
    window = timedelta(seconds=600)
    assert before - window <= handed.resend_since <= datetime.now(UTC) - window
    assert accepted.reference == "M42" and not accepted.resent


def test_refusals_show_text_and_log_their_reason_apart() -> None:
    desk = Desk()
    errors: list[PalaisError] = []
    for attempt in (
        lambda: desk.start(AVOCAT, CONFRERE),
        lambda: add(desk.start(), "nobody@nowhere.test"),
        lambda: add(desk.start(OUTSIDER), DOSSIER.address),
    ):
        with pytest.raises(PalaisError) as refused:
            attempt()
        errors.append(refused.value)
    for error in errors:
        assert error.permanent and error.reason and error.reason != error.text
