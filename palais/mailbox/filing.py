"""Filing plans: where an accepted message goes, and what commits with it.

A plan is computed by the domain and carried out by storage in one
transaction, which allocates the UIDs and MODSEQs: the copies to file, the
drafts the message supersedes, and any further records that must be true
together with the filing (``records``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind, CommittedRecord

__all__ = [
    "CommittedRecord",
    "Destination",
    "EarlierMessage",
    "Filed",
    "Filer",
    "FilingPlan",
    "resend_of",
]


@dataclass(frozen=True, slots=True)
class Destination:
    owner: str
    kind: BoxKind
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class FilingPlan:
    dossier: str | None
    destinations: tuple[Destination, ...]
    supersedes: SupersededDrafts | None = None
    records: tuple[CommittedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class EarlierMessage:
    """A stored message with the Message-ID of the one being filed: the facts
    the resend rule needs."""

    id: int
    sender: str
    sha256: str  # of the bytes stored
    size: int  # bytes stored
    # The digest of its sender and the bytes as they were submitted, before
    # the gateway completed them (None: not a submission, or stored before
    # migration 0016).
    arrival: str | None
    accepted: datetime  # timezone-aware
    filed: bool  # has a dossier: a filing (drafts and imports have none)
    held: frozenset[tuple[str, BoxKind]]  # (owner, kind) of its placements among the plan's owners


# Seconds during which the same message sent again is a resend (``[smtp] resend_window``).
DEFAULT_RESEND_WINDOW = 86400.0


def resend_of(
    earlier: Sequence[EarlierMessage],
    sender: str,
    sha256: str,
    since: datetime,
    plan: FilingPlan,
    arrival: str | None = None,
) -> int | None:
    """The earlier filing this submission repeats, if any: the first one by the
    same sender, with the same bytes, accepted since ``since``, that every
    destination of ``plan`` holds.

    The same bytes: those stored (``sha256``), or those submitted
    (``arrival``). A client that lost the 250 sends the message again,
    maybe to another node behind the load balancer, which completes it
    with its own trace line: only what the client sent is the same.

    A filing that did not reach all of them is no answer: a client told
    "452 4.5.3 Too many recipients" sends the same message to the others in
    a second transaction, which must be filed.
    """
    wanted: set[tuple[str, BoxKind]] = {(d.owner, d.kind) for d in plan.destinations}
    # A plan without a dossier is a court act (a saisine, a constitution:
    # palais.mailbox.saisine_flow), filed outside dossiers: its boxes tell.
    court_act = plan.dossier is None
    if court_act:
        # The addressee's copy tells: the sender's own moves once the court
        # decides (to Saisines/Rejetées, or into the dossier it opens), and
        # a draft of the act, with the same bytes, is never in its Reçus.
        addressed: set[tuple[str, BoxKind]] = {
            (d.owner, d.kind) for d in plan.destinations if d.kind is BoxKind.RECUS
        }
        wanted = addressed or wanted
    for message in sorted(earlier, key=lambda m: m.id):
        if (
            (message.filed or court_act)
            and message.sender == sender
            and (message.sha256 == sha256 or (arrival is not None and message.arrival == arrival))
            and message.accepted >= since
            and wanted <= message.held
        ):
            return message.id
    return None


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
    """Carries out a filing plan (storage: ``MailStore.file``)."""

    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
        *,
        resend_since: datetime | None = None,
        arrival: str | None = None,
    ) -> Filed:
        """File the message in every box of the plan; durable on return.

        ``resend_since``: if a message by ``who.address`` with the same
        Message-ID and the same bytes (sha256), filed in every box of this
        plan, was accepted at or after this instant, file nothing and return
        that message, ``resent`` set. The question is answered in the filing
        transaction itself, so that two identical submissions in flight at
        once file one message. ``arrival`` (``completion.arrival_digest``)
        recognises the same message sent again to another node, which
        completes it otherwise.
        """
        ...
