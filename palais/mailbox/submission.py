"""Submission: the rules every submitted message goes through, in SMTP's order.

A message belongs to exactly one dossier: it is written to the dossier's
address (which reaches the service in charge), copies may go to other
participants of that dossier only, only participants may write, and the
subject always starts with the dossier number in brackets. The sender is
checked first, each recipient as it comes, the content last; no rule is
checked twice.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from palais.mailbox.boxes import NUMBER_IN_TEXT
from palais.mailbox.delegation import (
    ActedFor,
    Delegation,
    acting_for,
    check_sender_header,
    receipt_for,
    sending_for,
)
from palais.mailbox.errors import (
    InvalidMessage,
    MessageTooBig,
    NotAllowed,
    SenderMismatch,
    UnknownRecipient,
)
from palais.mailbox.evidence import deposit_and_delivery
from palais.mailbox.filing import DEFAULT_RESEND_WINDOW, Filer
from palais.mailbox.identity import Identity
from palais.mailbox.message import (
    MessageSummary,
    header_fields,
    header_size,
    normalize_line_endings,
    summarize,
)
from palais.mailbox.message_decisions import REGISTRIES, MessageDecisions
from palais.mailbox.relay import divert_to_relay
from palais.mailbox.routing import (
    Addressee,
    AddresseeKind,
    FilingPlan,
    check_sender,
    plan_filing,
)
from palais.mailbox.saisine_flow import CourtActs, check_court_act_recipient, is_court_act

_SUBJECT_LINE = re.compile(rb"(?im)^subject:[ \t]*")


class AddressBook(Protocol):
    """The directory's answers; a cached answer comes without a database trip."""

    async def resolve(self, address: str) -> Addressee | None: ...

    async def participants(self, number: str) -> frozenset[str]: ...


class DelegationBook(Protocol):
    async def held_by(self, delegate: str) -> tuple[Delegation, ...]:
        """The delegations ``delegate`` holds now (an answer a few seconds old at most)."""
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
        delegations: DelegationBook | None = None,
        relayed: frozenset[str] = frozenset(),
        court_acts: CourtActs | None = None,
        decisions: MessageDecisions | None = None,
    ) -> None:
        """``court_acts``: what is written to the juridictions' saisine and
        constitution addresses (``palais.mailbox.saisine_flow``).
        ``receipts``: each accepted message carries its deposit receipt (the
        filer must be able to issue it, or nothing is accepted).
        ``delegations``: who may send for whom (none without it).
        ``relayed``: court systems whose copy goes to their SMTP endpoint
        (``palais.mailbox.relay``) instead of their INBOX.
        ``decisions``: the registry's decisions on lawyers' messages, sent to
        a dossier's address (``palais.mailbox.message_decisions``)."""
        self._receipts = receipts
        self._decisions = decisions
        self._court_acts = court_acts
        self._relayed = relayed
        self._delegations = delegations
        self._addresses = addresses
        self._filer = filer
        self._max_size = max_size
        self._resend_window = resend_window

    def submission(self, who: Identity, mail_from: str) -> Submission:
        """A new message by ``who``, sent as ``mail_from`` (which must be theirs)."""
        check_sender(who, mail_from)
        return Submission(self, who)

    async def open(self, who: Identity, mail_from: str) -> Submission:
        """A new message by ``who``, sent as ``mail_from``: their own address, or
        that of a lawyer who delegated sending to them (SMTP's MAIL)."""
        sender = mail_from.strip().lower()
        if sender in (who.address, who.mailbox_owner) or self._delegations is None:
            return self.submission(who, mail_from)
        held = await self._delegations.held_by(who.address)
        sending_for(who, sender, held)  # refused (5.7.1) unless a delegation to write
        return Submission(self, acting_for(who, sender), delegate=who, held=held)

    async def held_by(self, who: Identity) -> tuple[Delegation, ...]:
        if self._delegations is None:
            return ()
        return await self._delegations.held_by(who.address)


class Submission:
    """One message on its way in: the sender, then its recipients, then its content.

    Made by ``SubmissionDesk.submission`` once the sender is checked (SMTP's
    MAIL). ``add_recipient`` (each RCPT) checks one recipient; the first that
    names a dossier fixes the message's dossier, and each recipient is
    checked against it once, when both are known. ``accept`` (DATA) checks
    only what the content decides (and the dossier, if no recipient named
    one: the subject then does), then files the message.
    """

    __slots__ = (
        "_delegate",
        "_desk",
        "_dossier",
        "_held",
        "_members",
        "_recipients",
        "_stand_in",
        "who",
    )

    def __init__(
        self,
        desk: SubmissionDesk,
        who: Identity,
        *,
        delegate: Identity | None = None,
        held: tuple[Delegation, ...] | None = None,
    ) -> None:
        self._desk = desk
        # Who the message is from: the certificate's holder, or (sending for
        # a lawyer) the holder acting on the lawyer's mailbox.
        self.who = who
        self._recipients: list[Addressee] = []
        self._dossier: str | None = None
        self._members: frozenset[str] = frozenset()
        # Sending for a lawyer: the delegate as they proved themself.
        self._delegate = delegate
        self._held = held  # the delegations of the sender, once asked
        # The sender takes no part in the dossier but holds a delegation from
        # a lawyer who does: the From header must then name that lawyer.
        self._stand_in = False

    @property
    def delegate(self) -> Identity | None:
        """Who sends for the lawyer ``who.mailbox_owner`` names, if anyone."""
        return self._delegate

    async def _delegations(self) -> tuple[Delegation, ...]:
        if self._held is None:
            self._held = await self._desk.held_by(self._delegate or self.who)
        return self._held

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
        if is_court_act(found):  # a saisine or a constitution, or a court's answer
            check_court_act_recipient(who, found, len(self._recipients))
            self._recipients.append(found)
            return found
        if self._recipients and is_court_act(self._recipients[0]):
            check_court_act_recipient(who, self._recipients[0], len(self._recipients))
        current = self._dossier
        if found.kind is AddresseeKind.DOSSIER:
            assert found.dossier is not None
            if current is None:
                # The first recipient naming a dossier fixes it: the sender
                # and the copies accepted so far must take part in it.
                members = await self._desk._addresses.participants(found.dossier)
                await self._check_members(found.dossier, members, self._recipients)
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

    async def _check_members(
        self, number: str, members: frozenset[str], copies: Sequence[Addressee]
    ) -> None:
        """Refuse unless the sender and every copy take part in dossier ``number``.

        Sending for a lawyer, the lawyer must, and the delegation cover the
        dossier; a delegate who said MAIL FROM their own address may still
        send for a lawyer who does (the From header will say), if one
        delegated this dossier to them.
        """
        who = self.who
        if self._delegate is not None:
            sending_for(self._delegate, who.mailbox_owner, await self._delegations(), number)
        if who.address not in members and who.mailbox_owner not in members:
            if self._delegate is None and any(
                d.lawyer in members
                for d in await self._delegations()
                if d.dossier in (None, number)
            ):
                self._stand_in = True
            else:
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
                await self._check_members(number, members, self._recipients)
                self._members = members
                return number
        raise InvalidMessage(
            "Write to the dossier's address, or name the dossier as [YYYY-NNNNNNN] in the subject",
            reason=f"no dossier in recipients nor subject {subject!r}",
        )

    async def accept(self, data: bytes, *, arrival: str | None = None) -> Accepted:
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
        if is_court_act(recipients[0]) and desk._court_acts is not None:
            since = resend_since(summary, datetime.now(UTC), desk._resend_window)
            act = await desk._court_acts.accept(
                who, recipients[0], data, summary, since, desk._relayed, arrival
            )
            return Accepted(act.reference, act.sha256, len(data), act.plan, act.resent)
        number = self._dossier
        if number is None:
            number = await self._dossier_from_subject(summary.subject)
        check_subject(summary.subject, number)
        if not has_subject_prefix(summary.subject, number):
            data = with_subject_prefix(data, number)
            summary = summarize(data)
        if not summary.has_body:
            raise InvalidMessage("The message body is empty", reason="empty body")
        data, summary = await self._check_author(data, summary, number)
        who, delegate = self.who, self._delegate
        plan = plan_filing(who, recipients, number, message_id=summary.message_id)
        if desk._relayed:
            plan = divert_to_relay(plan, desk._relayed, who.address)
        now = datetime.now(UTC)
        if desk._receipts:
            written = [(r.address, r.mailbox_owner) for r in recipients]
            receipt = deposit_and_delivery(who, written, plan.dossier, now, relayed=desk._relayed)
            if delegate is not None:
                receipt = receipt_for(receipt, who.mailbox_owner, self._lawyer_name(), delegate)
            plan = replace(plan, records=(*plan.records, receipt))
        if desk._decisions is not None and who.role in REGISTRIES:
            # A registry's message may carry a decision on a lawyer's message.
            decided = await desk._decisions.record(who, number, data, summary, arrival)
            if decided is not None:
                plan = replace(plan, records=(*plan.records, decided))
        if delegate is not None:
            acted = ActedFor(delegate.address, who.mailbox_owner, "send", number)
            plan = replace(plan, records=(*plan.records, acted))
        since = resend_since(summary, now, desk._resend_window)
        filed = await desk._filer.file(
            who, data, summary, plan, resend_since=since, arrival=arrival
        )
        return Accepted(
            reference=f"M{filed.message_id}",
            sha256=filed.sha256,
            size=len(data),
            plan=plan,
            resent=filed.resent,
        )

    def _lawyer_name(self) -> str:
        lawyer = self.who.mailbox_owner
        return next((d.lawyer_name for d in self._held or () if d.lawyer == lawyer), lawyer)

    async def _check_author(
        self, data: bytes, summary: MessageSummary, number: str
    ) -> tuple[bytes, MessageSummary]:
        """The From header names the sender, or the lawyer they send for.

        A From naming another account of the network is a lawyer's who
        delegated sending in this dossier to the sender, or refused (5.7.1);
        the message then says Sender: the delegate (added when missing).
        """
        who = self.who
        authors = _authors(summary.from_addr)
        if self._delegate is None:
            others = [a for a in authors if a not in (who.address, who.mailbox_owner)]
            if not others:
                if self._stand_in:
                    raise NotAllowed(
                        f"You take no part in dossier {number}",
                        reason=f"{who.address} not a participant of {number}",
                    )
                return data, summary
            held = await self._delegations()
            lawyer = others[0]
            if len(authors) != 1 or not any(d.lawyer == lawyer for d in held):
                if self._stand_in or await self._desk._addresses.resolve(lawyer) is not None:
                    raise SenderMismatch(
                        f"From: <{lawyer}> is not your address <{who.address}>",
                        reason=f"{who.address} wrote From: {summary.from_addr!r}",
                    )
                return data, summary  # an address unknown here: not someone else's
            sending_for(who, lawyer, held, number)
            members = self._members or await self._desk._addresses.participants(number)
            if lawyer not in members:
                raise NotAllowed(
                    f"<{lawyer}> takes no part in dossier {number}",
                    reason=f"{who.address} sent for {lawyer}, not in {number}",
                )
            self._delegate, self.who = who, acting_for(who, lawyer)
        else:
            lawyer = who.mailbox_owner
            if authors != [lawyer]:
                raise SenderMismatch(
                    f"A message sent for <{lawyer}> must say From: <{lawyer}>",
                    reason=f"{self._delegate.address} for {lawyer} wrote From: "
                    f"{summary.from_addr!r}",
                )
        delegate = self._delegate
        assert delegate is not None
        head = header_fields(data[: summary.header_size])
        senders = [a for v in head.get("sender", ()) for a in _authors(v)]
        if not check_sender_header(delegate, lawyer, senders):
            data = b"Sender: <" + delegate.address.encode() + b">\r\n" + data
            summary = summarize(data)
        return data, summary


@functools.lru_cache(maxsize=4096)
def _authors_of(text: str) -> tuple[str, ...]:
    return tuple(a.strip().lower() for _, a in email.utils.getaddresses([text]) if a.strip())


def _authors(text: str) -> list[str]:
    """The addresses of a From (or Sender) field's text, lower-cased."""
    if not text:
        return []
    try:
        return list(_authors_of(text))
    except (RecursionError, ValueError, TypeError, IndexError):
        return [text.strip().lower()]
