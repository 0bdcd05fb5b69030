"""The published model of the evidence part: its JSON Schema, and a strict reader.

The gateway writes evidence from ``palais.mailbox.evidence`` (plain values,
built fast); this model is what it promises those bytes are, checked by
the tests and by the verifier.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from palais.mailbox.evidence import MUTUAL_TLS, EventCode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartyModel(_Strict):
    """A sender, recipient, reader or delegate."""

    address: str = Field(description="e-mail address")
    name: str = Field(description="display name from the directory or certificate")
    role: str | None = Field(description="avocat, greffier, service, ...")
    mailbox: str | None = Field(
        default=None, description="the mailbox acted on, when not the party's own (a service's)"
    )
    authentication: str | None = Field(
        description=f"how the party proved who it is ({MUTUAL_TLS}), null if it did not act"
    )
    certificate_sha256: str | None = Field(
        description="SHA-256 of the DER certificate it authenticated with"
    )


class EventModel(_Strict):
    code: EventCode
    etsi: str = Field(description="ETSI EN 319 522-2 event")
    time: str = Field(description="UTC, ISO 8601 with microseconds")
    reason: str | None = Field(description="reason code or text (rejections, non-remise)")
    recipients: list[PartyModel]


class AttachmentModel(_Strict):
    name: str | None
    media_type: str
    size: int = Field(description="bytes of the decoded attachment")
    sha256: str = Field(description="SHA-256 of the decoded attachment")


class MessageModel(_Strict):
    message_id: str | None
    subject: str
    size: int = Field(description="bytes of the message as stored")
    sha256: str = Field(description="SHA-256 of the message as stored")
    attachments: list[AttachmentModel]


class IssuerModel(_Strict):
    name: str
    certificate_sha256: str


class LogModel(_Strict):
    position: int = Field(description="leaf index in the evidence log, from 0")
    previous: str = Field(description="leaf hash of the previous entry (64 zeros for the first)")


class Evidence(_Strict):
    """The machine-readable content of an accusé de réception."""

    version: Literal[1]
    evidence_id: str
    issuer: IssuerModel
    policy: str
    events: list[EventModel] = Field(min_length=1)
    submission_time: str
    sender: PartyModel
    delegate: PartyModel | None
    dossier: str | None
    message: MessageModel
    log: LogModel


def evidence_schema() -> dict[str, Any]:
    """The JSON Schema of the evidence part (published with the package)."""
    schema = Evidence.model_json_schema()
    schema["$id"] = "urn:palais:schema:evidence:1"
    schema["title"] = "Palais evidence (accusé de réception)"
    return schema
