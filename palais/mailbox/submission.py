"""Submission: the rules every submitted message goes through, in SMTP's order.

A message belongs to exactly one dossier: it is written to the dossier's
address (which reaches the service in charge), copies may go to other
participants of that dossier only, only participants may write, and the
subject always starts with the dossier number in brackets. The sender is
checked first, each recipient as it comes, the content last; no rule is
checked twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from palais.mailbox.boxes import NUMBER_IN_TEXT
from palais.mailbox.errors import InvalidMessage, MessageTooBig, NotAllowed, UnknownRecipient
from palais.mailbox.evidence import deposit_and_delivery
from palais.mailbox.identity import Identity
from palais.mailbox.message import (
    MessageSummary,
    header_size,
    normalize_line_endings,
    summarize,
)
from palais.mailbox.routing import (
    Addressee,
    AddresseeKind,
    FilingPlan,
    check_sender,
    plan_filing,
)

_SUBJECT_LINE = re.compile(rb"(?im)^subject:[ \t]*")


class AddressBook(Protocol):
    """The directory's answers; a cached answer comes without a database trip."""

    async def resolve(self, address: str) -> Addressee | None: ...

    async def participants(self, number: str) -> frozenset[str]: ...


# Seconds during which the same message sent again is a resend (``[smtp] resend_window``).
DEFAULT_RESEND_WINDOW = 86400.0


class Filed(Protocol):
    @property
    def message_id(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def resent(self) -> bool:
        """True if nothing was filed: the message was already (``message_id`` is it)."""
        ...


class Filer(Protocol):
    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
        *,
        resend_since: datetime | None = None,
    ) -> Filed:
        """File the message in every box of the plan; durable on return.

        ``resend_since``: if a message by ``who.address`` with the same
        Message-ID and the same bytes (sha256), filed in every box of this
        plan, was accepted at or after this instant, file nothing and return
        that message, ``resent`` set. The question is answered in the filing
        transaction itself, so that two identical submissions in flight at
        once file one message.
        """
        ...


@dataclass(frozen=True, slots=True)
class Accepted:
    reference: str  # shown in the 250 reply and the logs
    sha256: str  # of the bytes stored
    size: int  # bytes stored
    plan: FilingPlan
    resent: bool = False  # the same message again: the first one's reference, nothing filed


def resend_since(summary: MessageSummary, now: datetime, window: float) -> datetime | None:
    """Since when an identical earlier submission makes this one a resend.

    A client that lost the 250 (a dropped connection, a timeout) sends the
    same message again: same sender, same Message-ID, same bytes, to the
    same recipients. Within the window it gets the first 250 and nothing is
    filed twice. The same message to other recipients (a client splitting
    them over transactions after "452 Too many recipients") is filed for
    them. Without a Message-ID, or with the window at 0, every submission
    is a new message.
    """
    if window <= 0 or not summary.message_id:
        return None
    return now - timedelta(seconds=window)


def with_subject_prefix(data: bytes, number: str) -> bytes:
    """The message with its Subject starting with ``[number] ``.

    A number already present later ("Re: [N] ...") moves to the front rather
    than appearing twice.
    """
    size = header_size(data)
    head, body = data[:size], data[size:]
    found = _SUBJECT_LINE.search(head)
    if found is None:  # pragma: no cover - an empty subject is refused before
        return data
    tag = f"[{number}]".encode()
    end = head.find(b"\n", found.end())
    end = len(head) if end < 0 else end
    line = head[found.end() : end]
    if tag in line:
        line = line.replace(tag + b" ", b"", 1).replace(tag, b"", 1)
    return head[: found.end()] + tag + b" " + line + head[end:] + body


def check_subject(subject: str, number: str) -> None:
    """Refuse an empty subject, or one naming another dossier than ``number``."""
    if not subject.strip():
        raise InvalidMessage("The subject is empty", reason="empty subject")
    for other in NUMBER_IN_TEXT.findall(subject):
        if other != number:
            raise InvalidMessage(
                f"The subject names dossier {other} but the message is for dossier {number}",
                reason=f"subject names {other}, sent to {number}",
            )


def has_subject_prefix(subject: str, number: str) -> bool:
    """True if the subject already starts with ``[number] ``."""
    return subject.startswith(f"[{number}] ")


class SubmissionDesk:
    """Where every submitted message starts: one ``Submission`` per message."""

    def __init__(
        self,
        addresses: AddressBook,
        filer: Filer,
        *,
        max_size: int,
        resend_window: float = DEFAULT_RESEND_WINDOW,
        receipts: bool = True,
    ) -> None:
        """``receipts``: each accepted message carries its deposit receipt (the
        filer must be able to issue it, or nothing is accepted)."""
        self._receipts = receipts
        self._addresses = addresses
        self._filer = filer
        self._max_size = max_size
        self._resend_window = resend_window

    def submission(self, who: Identity, mail_from: str) -> Submission:
        """A new message by ``who``, sent as ``mail_from`` (which must be theirs)."""
        check_sender(who, mail_from)
        return Submission(self, who)


class Submission:
    """One message on its way in: the sender, then its recipients, then its content.

    Made by ``SubmissionDesk.submission`` once the sender is checked (SMTP's
    MAIL). ``add_recipient`` (each RCPT) checks one recipient; the first that
    names a dossier fixes the message's dossier, and each recipient is
    checked against it once, when both are known. ``accept`` (DATA) checks
    only what the content decides (and the dossier, if no recipient named
    one: the subject then does), then files the message.
    """

    __slots__ = ("_desk", "_dossier", "_members", "_recipients", "who")

    def __init__(self, desk: SubmissionDesk, who: Identity) -> None:
        self._desk = desk
        self.who = who
        self._recipients: list[Addressee] = []
        self._dossier: str | None = None
        self._members: frozenset[str] = frozenset()

    @property
    def recipients(self) -> tuple[Addressee, ...]:
        return tuple(self._recipients)

    @property
    def dossier(self) -> str | None:
        """The dossier fixed so far (by a recipient), if any."""
        return self._dossier

    async def add_recipient(self, address: str) -> Addressee:
        """Accept one more recipient, or refuse it (the others stay)."""
        who = self.who
        found = await self._desk._addresses.resolve(address)
        if found is None:
            raise UnknownRecipient(
                f"<{address}> is not a known address here",
                reason=f"{who.address} wrote to unknown {address!r}",
            )
        current = self._dossier
        if found.kind is AddresseeKind.DOSSIER:
            assert found.dossier is not None
            if current is None:
                # The first recipient naming a dossier fixes it: the sender
                # and the copies accepted so far must take part in it.
                members = await self._desk._addresses.participants(found.dossier)
                self._check_members(found.dossier, members, self._recipients)
                self._dossier, self._members = found.dossier, members
            elif current != found.dossier:
                raise NotAllowed(
                    "A message belongs to one dossier only",
                    reason=f"{who.address} mixed dossiers {current} and {found.dossier}",
                )
        elif current is not None and found.address not in self._members:
            raise NotAllowed(
                f"<{address}> takes no part in dossier {current}",
                reason=f"copy to non-participant {address} in {current}",
            )
        self._recipients.append(found)
        return found

    def _check_members(
        self, number: str, members: frozenset[str], copies: Sequence[Addressee]
    ) -> None:
        """Refuse unless the sender and every copy take part in dossier ``number``."""
        who = self.who
        if who.address not in members and who.mailbox_owner not in members:
            raise NotAllowed(
                f"You take no part in dossier {number}",
                reason=f"{who.address} not a participant of {number}",
            )
        for rcpt in copies:
            if rcpt.kind is not AddresseeKind.DOSSIER and rcpt.address not in members:
                raise NotAllowed(
                    f"<{rcpt.address}> takes no part in dossier {number}",
                    reason=f"copy to non-participant {rcpt.address} in {number}",
                )

    async def _dossier_from_subject(self, subject: str) -> str:
        """No recipient named a dossier: the subject must, and everyone take part in it."""
        named = set(NUMBER_IN_TEXT.findall(subject))
        if len(named) == 1:
            number: str = named.pop()
            members = await self._desk._addresses.participants(number)
            if members:
                self._check_members(number, members, self._recipients)
                return number
        raise InvalidMessage(
            "Write to the dossier's address, or name the dossier as [YYYY-NNNNNNN] in the subject",
            reason=f"no dossier in recipients nor subject {subject!r}",
        )

    async def accept(self, data: bytes) -> Accepted:
        """Check the content and file the message; durable when this returns.

        What is stored (and hashed) has CRLF line endings and the dossier's
        subject prefix; ``Accepted`` describes those bytes.
        """
        desk, who, recipients = self._desk, self.who, self._recipients
        if not recipients:
            raise InvalidMessage("The message has no recipient", reason="no recipient")
        if len(data) > desk._max_size:
            raise MessageTooBig(f"Message exceeds the {desk._max_size} byte limit")
        data = normalize_line_endings(data)
        summary = summarize(data, submitted=True)
        number = self._dossier
        if number is None:
            number = await self._dossier_from_subject(summary.subject)
        check_subject(summary.subject, number)
        if not has_subject_prefix(summary.subject, number):
            data = with_subject_prefix(data, number)
            summary = summarize(data)
        if not summary.has_body:
            raise InvalidMessage("The message body is empty", reason="empty body")
        plan = plan_filing(who, recipients, number, message_id=summary.message_id)
        now = datetime.now(UTC)
        if desk._receipts:
            written = [(r.address, r.mailbox_owner) for r in recipients]
            receipt = deposit_and_delivery(who, written, plan.dossier, now)
            plan = replace(plan, records=(*plan.records, receipt))
        since = resend_since(summary, now, desk._resend_window)
        filed = await desk._filer.file(who, data, summary, plan, resend_since=since)
        return Accepted(
            reference=f"M{filed.message_id}",
            sha256=filed.sha256,
            size=len(data),
            plan=plan,
            resent=filed.resent,
        )
