"""The submission desk: the rules every path that creates a message goes through.

A message belongs to exactly one dossier: it is written to the dossier's
address (which reaches the service in charge), copies may go to other
participants of that dossier only, only participants may write, and the
subject always starts with the dossier number in brackets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from palais.mailbox.boxes import NUMBER_IN_TEXT
from palais.mailbox.errors import InvalidMessage, MessageTooBig, NotAllowed, UnknownRecipient
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


def check_subject(subject: str, number: str) -> bool:
    """True if the subject needs the dossier prefix; refuses a wrong dossier."""
    if not subject.strip():
        raise InvalidMessage("The subject is empty", reason="empty subject")
    for other in NUMBER_IN_TEXT.findall(subject):
        if other != number:
            raise InvalidMessage(
                f"The subject names dossier {other} but the message is for dossier {number}",
                reason=f"subject names {other}, sent to {number}",
            )
    return not subject.startswith(f"[{number}] ")


class SubmissionDesk:
    def __init__(
        self,
        addresses: AddressBook,
        filer: Filer,
        *,
        max_size: int,
        resend_window: float = DEFAULT_RESEND_WINDOW,
    ) -> None:
        self._addresses = addresses
        self._filer = filer
        self._max_size = max_size
        self._resend_window = resend_window

    def sender(self, who: Identity, mail_from: str) -> None:
        check_sender(who, mail_from)

    async def _is_participant(self, who: Identity, number: str) -> bool:
        members = await self._addresses.participants(number)
        return who.address in members or who.mailbox_owner in members

    async def _takes_part(self, address: str, number: str) -> bool:
        return address in await self._addresses.participants(number)

    async def recipient(
        self, who: Identity, address: str, already: Sequence[Addressee] = ()
    ) -> Addressee:
        """Accept one more recipient, given those already accepted."""
        found = await self._addresses.resolve(address)
        if found is None:
            raise UnknownRecipient(
                f"<{address}> is not a known address here",
                reason=f"{who.address} wrote to unknown {address!r}",
            )
        current = next((a.dossier for a in already if a.dossier), None)
        if found.kind is AddresseeKind.DOSSIER:
            assert found.dossier is not None
            if current is not None and current != found.dossier:
                raise NotAllowed(
                    "A message belongs to one dossier only",
                    reason=f"{who.address} mixed dossiers {current} and {found.dossier}",
                )
            if not await self._is_participant(who, found.dossier):
                raise NotAllowed(
                    f"You take no part in dossier {found.dossier}",
                    reason=f"{who.address} not a participant of {found.dossier}",
                )
        elif current is not None and not await self._takes_part(found.address, current):
            raise NotAllowed(
                f"<{address}> takes no part in dossier {current}",
                reason=f"copy to non-participant {address} in {current}",
            )
        return found

    async def _dossier_of(self, recipients: Sequence[Addressee], subject: str) -> str:
        """The dossier a message belongs to: its dossier address, else its subject."""
        dossiers = {r.dossier for r in recipients if r.dossier}
        if len(dossiers) > 1:
            raise NotAllowed("A message belongs to one dossier only")
        if dossiers:
            return str(dossiers.pop())
        named = set(NUMBER_IN_TEXT.findall(subject))
        if len(named) == 1:
            number: str = named.pop()
            if await self._addresses.participants(number):
                return number
        raise InvalidMessage(
            "Write to the dossier's address, or name the dossier as [YYYY-NNNNNNN] in the subject",
            reason=f"no dossier in recipients nor subject {subject!r}",
        )

    async def accept(self, who: Identity, recipients: Sequence[Addressee], data: bytes) -> Accepted:
        """Validate and file a message; durable when this returns.

        What is stored (and hashed) has CRLF line endings and the dossier's
        subject prefix; ``Accepted`` describes those bytes.
        """
        if len(data) > self._max_size:
            raise MessageTooBig(f"Message exceeds the {self._max_size} byte limit")
        data = normalize_line_endings(data)
        summary = summarize(data, submitted=True)
        number = await self._dossier_of(recipients, summary.subject)
        members = await self._addresses.participants(number)
        if who.address not in members and who.mailbox_owner not in members:
            raise NotAllowed(
                f"You take no part in dossier {number}",
                reason=f"{who.address} not a participant of {number}",
            )
        for rcpt in recipients:
            if rcpt.kind is not AddresseeKind.DOSSIER and rcpt.address not in members:
                raise NotAllowed(
                    f"<{rcpt.address}> takes no part in dossier {number}",
                    reason=f"copy to non-participant {rcpt.address} in {number}",
                )
        if check_subject(summary.subject, number):
            data = with_subject_prefix(data, number)
            summary = summarize(data)
        if not summary.has_body:
            raise InvalidMessage("The message body is empty", reason="empty body")
        plan = plan_filing(who, recipients, number)
        since = resend_since(summary, datetime.now(UTC), self._resend_window)
        filed = await self._filer.file(who, data, summary, plan, resend_since=since)
        return Accepted(
            reference=f"M{filed.message_id}",
            sha256=filed.sha256,
            size=len(data),
            plan=plan,
            resent=filed.resent,
        )
