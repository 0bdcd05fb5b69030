"""Drafts and the client's own sent copies: what an APPEND files, and what a submission supersedes.

A client saves drafts in Brouillons and, after sending, often APPENDs its
own copy to Envoyés. The gateway already filed that copy when the message
was sent: the APPEND is answered with it, never filed twice. A draft once
sent leaves Brouillons.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from palais.mailbox.boxes import NUMBER_IN_TEXT, BoxRef, check_append
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind

_ADDRESS = re.compile(r"[\w.+-]+@[\w.-]+")


@dataclass(frozen=True, slots=True)
class SentCopy:
    """The client's copy of a message it sent: answer with the gateway's own (``uid``)."""

    uid: int


@dataclass(frozen=True, slots=True)
class SaveDraft:
    """A new placement in the owner's Brouillons (both views)."""

    kind: BoxKind
    dossier: str | None
    flags: frozenset[str]


AppendPlan = SentCopy | SaveDraft


@dataclass(frozen=True, slots=True)
class SupersededDrafts:
    """The owner's drafts with this Message-ID: sent now, they leave Brouillons."""

    owner: str
    message_id: str


def addresses_written_to(summary: MessageSummary) -> list[str]:
    """The To and Cc addresses, in order: the facts a draft's dossier is found from."""
    return _ADDRESS.findall(" ".join((summary.to_addr, summary.cc_addr)).lower())


def draft_dossier(
    box: BoxRef, summary: MessageSummary, dossier_at: Mapping[str, str]
) -> str | None:
    """The dossier a draft belongs to: its box's, else the first dossier address it
    is written to (``dossier_at``: dossier number by address), else the one its
    subject names."""
    if box.dossier is not None:
        return box.dossier
    for address in addresses_written_to(summary):
        number = dossier_at.get(address)
        if number is not None:
            return number
    found = NUMBER_IN_TEXT.search(summary.subject)
    return found.group(1) if found else None


def plan_sent_copy(existing_uid: int | None) -> SentCopy:
    """An APPEND to Envoyés: the gateway's copy of that message (``existing_uid``,
    found by Message-ID in the box), or a refusal."""
    if existing_uid is None:
        raise CannotDoThat("Messages enter Envoyés by being sent, not by APPEND")
    return SentCopy(existing_uid)


def plan_append(
    box: BoxRef,
    summary: MessageSummary,
    flags: frozenset[str],
    *,
    sent_uid: int | None,
    dossier_at: Mapping[str, str],
) -> AppendPlan:
    """What an APPEND to ``box`` does; ``sent_uid``: the box's newest entry with
    the message's Message-ID, if any."""
    check_append(box.kind)
    if box.kind is BoxKind.ENVOYES:
        return plan_sent_copy(sent_uid)
    return SaveDraft(BoxKind.BROUILLONS, draft_dossier(box, summary, dossier_at), flags)


def supersedes_drafts(owner: str, message_id: str | None) -> SupersededDrafts | None:
    """A message sent with a Message-ID replaces the sender's drafts of it."""
    return SupersededDrafts(owner, message_id) if message_id else None
