"""What a structured document is checked against besides itself.

Some rules read outside facts: a saisine books a date only on a slot the
juridiction opened, and names its draft summons among the message's
attachments; a constitution names its PDF. The checks take these facts as
a value, so that they stay pure and the same check runs in the client, at
the gateway and in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from palais.mailbox.court_events import HearingSlot

PDF_MAGIC = b"%PDF-"


@dataclass(frozen=True, slots=True)
class Attached:
    """One attachment of the message that carries the document."""

    name: str | None
    media_type: str  # lower case
    is_pdf: bool  # declared application/pdf and starting as a PDF does

    @classmethod
    def of(cls, name: str | None, media_type: str, payload: bytes) -> Attached:
        media_type = media_type.lower()
        is_pdf = media_type == "application/pdf" and payload.lstrip()[:5] == PDF_MAGIC
        return cls(name, media_type, is_pdf)


@dataclass(frozen=True, slots=True)
class DocumentContext:
    """``slots``: by juridiction code, the hearing slots it opened (a code
    absent: none opened), or None where they are not known (a lawyer's
    computer: the booked slot is then the gateway's to check);
    ``attachments``: the message's other parts."""

    slots: Mapping[str, Sequence[HearingSlot]] | None = field(default_factory=dict)
    attachments: tuple[Attached, ...] = ()

    def attachment(self, name: str) -> Attached | None:
        return next((a for a in self.attachments if a.name == name), None)
