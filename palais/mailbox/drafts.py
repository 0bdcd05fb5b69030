"""Drafts, the client's own sent copies and deletions by APPEND: what an APPEND
files, and what a submission supersedes.

A client saves drafts in Brouillons and, after sending, often APPENDs its
own copy to Envoyés. The gateway already filed that copy when the message
was sent: the APPEND is answered with it, never filed twice. A draft once
sent leaves Brouillons. Some clients (mbsync) delete a message by APPENDing
it to Supprimés, then flagging the original \\Deleted and expunging it: the
APPEND of a message the owner holds is its delete.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from palais.mailbox.boxes import NUMBER_IN_TEXT, BoxRef, check_append
from palais.mailbox.deletion import MovePlan, plan_move
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind, HeldPlacement

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


@dataclass(frozen=True, slots=True)
class DeleteHeld:
    """An APPEND to Supprimés of a message the owner holds: its delete, made as
    a COPY there makes it (a placement in Supprimés remembering where the
    message came from). The client's expunge of the original then removes it
    for good, the owner holding it in Supprimés already."""

    move: MovePlan


AppendPlan = SentCopy | SaveDraft | DeleteHeld

# Which of the owner's placements of the message an APPEND to Supprimés deletes.
_DELETE_FIRST = (BoxKind.RECUS, BoxKind.ENVOYES, BoxKind.BROUILLONS, BoxKind.ACCUSES)


@dataclass(frozen=True, slots=True)
class SupersededDrafts:
    """The owner's drafts with this Message-ID: sent now, they leave Brouillons."""

    owner: str
    message_id: str
    kind: BoxKind = BoxKind.BROUILLONS  # Saisines/Enregistrées for a saisine sent


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


def plan_delete_copy(
    box: BoxRef, existing_uid: int | None, held: Sequence[HeldPlacement]
) -> SentCopy | DeleteHeld:
    """An APPEND to Supprimés (``box``): the entry already there (``existing_uid``),
    else the delete of the owner's placement of that message (``held``: its
    placements outside Supprimés, same bytes or Message-ID), else a refusal."""
    if existing_uid is not None:
        return SentCopy(existing_uid)
    mine = [h for h in held if h.placement.kind in _DELETE_FIRST]
    if box.dossier is not None:
        mine = [h for h in mine if h.placement.dossier == box.dossier]
    if not mine:
        raise CannotDoThat(
            "Supprimés only takes the messages you delete; this one is not in your mailbox"
            if box.dossier is None
            else "Supprimés only takes the messages you delete; this one is not in this dossier"
        )
    chosen = min(mine, key=lambda h: (_DELETE_FIRST.index(h.placement.kind), h.placement.id))
    move = plan_move([chosen], box, keep_source=True)  # raises for a receipt
    if not move.steps:
        raise CannotDoThat("A deleted draft is gone for good, never kept in Supprimés")
    return DeleteHeld(move)


def plan_append(
    box: BoxRef,
    summary: MessageSummary,
    flags: frozenset[str],
    *,
    sent_uid: int | None,
    dossier_at: Mapping[str, str],
    held: Sequence[HeldPlacement] = (),
) -> AppendPlan:
    """What an APPEND to ``box`` does; ``sent_uid``: the box's newest entry with
    the message's Message-ID (or its bytes), if any; ``held``: for Supprimés,
    the owner's placements of that message."""
    if box.kind is BoxKind.SUPPRIMES:
        return plan_delete_copy(box, sent_uid, held)
    check_append(box.kind)
    if box.kind is BoxKind.ENVOYES:
        return plan_sent_copy(sent_uid)
    if box.kind is BoxKind.SAISINE_ENREGISTREE:  # a saisine saved, to resume later
        return SaveDraft(BoxKind.SAISINE_ENREGISTREE, None, flags)
    return SaveDraft(BoxKind.BROUILLONS, draft_dossier(box, summary, dossier_at), flags)


def supersedes_drafts(owner: str, message_id: str | None) -> SupersededDrafts | None:
    """A message sent with a Message-ID replaces the sender's drafts of it."""
    return SupersededDrafts(owner, message_id) if message_id else None
