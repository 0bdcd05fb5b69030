"""The submission desk: the rules every path that creates a message goes through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from palais.mailbox.errors import InvalidMessage, MessageTooBig, UnknownRecipient
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary, summarize
from palais.mailbox.routing import Addressee, FilingPlan, check_sender, plan_filing


class AddressBook(Protocol):
    def resolve(self, address: str) -> Addressee | None: ...


class Filed(Protocol):
    @property
    def message_id(self) -> int: ...

    @property
    def sha256(self) -> str: ...


class Filer(Protocol):
    async def file(
        self, who: Identity, data: bytes, summary: MessageSummary, plan: FilingPlan
    ) -> Filed: ...


@dataclass(frozen=True, slots=True)
class Accepted:
    reference: str  # shown in the 250 reply and the logs
    sha256: str
    size: int
    plan: FilingPlan


class SubmissionDesk:
    def __init__(self, addresses: AddressBook, filer: Filer, *, max_size: int) -> None:
        self._addresses = addresses
        self._filer = filer
        self._max_size = max_size

    def sender(self, who: Identity, mail_from: str) -> None:
        check_sender(who, mail_from)

    def recipient(self, who: Identity, address: str) -> Addressee:
        found = self._addresses.resolve(address)
        if found is None:
            raise UnknownRecipient(
                f"<{address}> is not a known address here",
                reason=f"{who.address} wrote to unknown {address!r}",
            )
        return found

    async def accept(self, who: Identity, recipients: Sequence[Addressee], data: bytes) -> Accepted:
        """Validate and file a message; durable when this returns."""
        if len(data) > self._max_size:
            raise MessageTooBig(f"Message exceeds the {self._max_size} byte limit")
        summary = summarize(data)
        if not summary.has_body:
            raise InvalidMessage("The message body is empty", reason="empty body")
        plan = plan_filing(who, recipients)
        filed = await self._filer.file(who, data, summary, plan)
        return Accepted(
            reference=f"M{filed.message_id}", sha256=filed.sha256, size=len(data), plan=plan
        )
