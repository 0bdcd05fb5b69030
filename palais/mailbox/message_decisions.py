"""The registry's decision on a lawyer's message in a dossier.

Besides saisines and constitutions (``palais.mailbox.registry``), the
registry accepts or rejects (with a reason) what a lawyer sends in a
dossier: conclusions, a piece. The court system (or a clerk) writes its
registry-decision document (``about: "message"``) to the dossier's own
address, not to the juridiction's saisine address: the decision is a
message of that dossier like any other the court sends there (to the
dossier's service, copies to the participants it names), and the address
names the dossier the decided message must belong to. The decision mail is
filed as a court message normally is, and ``MessageDecided`` rides with
that filing, so that the acceptation-greffe or rejet-greffe receipt
reaches the lawyer who sent the decided message in the same transaction,
or nothing does. A message is decided once (a second decision is
refused); the same decision sent again (its 250 lost) is a resend: filed
once, one receipt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from palais.mailbox.court_events import RegistryDecision
from palais.mailbox.documents import REGISTRY_DECISION, carried_documents
from palais.mailbox.errors import CannotDoThat, InvalidMessage
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import CommittedRecord

__all__ = [
    "REGISTRIES",
    "DossierMessage",
    "DossierMessages",
    "MessageDecided",
    "MessageDecisions",
    "plan_message_decision",
]

# Who decides for the registry: its court system, its clerks.
REGISTRIES = frozenset({Role.COURT_SYSTEM, Role.GREFFIER})
_LAWYERS = (Role.AVOCAT.value, Role.COLLABORATEUR.value)


@dataclass(frozen=True, slots=True)
class DossierMessage:
    """A filed message carrying the Message-ID a decision names: the facts the rule needs."""

    message: int  # its row
    sender: str
    sender_role: str | None  # the sender's account's role (None: no such account)
    dossier: str | None  # the number of the dossier it belongs to, if any
    decided: bool = False  # the registry's receipt about it issued already


@dataclass(frozen=True, slots=True)
class MessageDecided(CommittedRecord):
    """The registry's decision on a filed message: its receipt goes to the
    message's sender, written with the decision mail's filing."""

    registry: Identity
    message: int  # the decided message's row
    accepted: bool
    reason: str | None


class DossierMessages(Protocol):
    async def messages_with_id(self, message_id: str) -> Sequence[DossierMessage]:
        """The filed messages carrying this Message-ID (with or without angle brackets)."""
        ...

    async def decision_filed(
        self, court: str, message_id: str, sha256: str, arrival: str | None = None
    ) -> int | None:
        """The decision mail ``court`` sent already with this Message-ID and these
        bytes, stored or as submitted, if any (``palais.mailbox.saisine_flow.SentActs``)."""
        ...


def plan_message_decision(
    decision: RegistryDecision,
    number: str,
    found: Sequence[DossierMessage],
    registry: Identity,
) -> MessageDecided:
    """The record of a decision about a message, sent to dossier ``number``'s
    address; refused (5.6.0, naming the field) unless it names a lawyer's
    message of that very dossier."""
    if decision.about != "message":
        raise InvalidMessage(
            f"about: une décision sur une {decision.about} s'envoie à l'adresse de la juridiction",
            reason=f"decision about a {decision.about} sent to dossier {number}",
        )
    if decision.dossier != number:
        raise InvalidMessage(
            f"dossier: la décision porte sur le dossier {decision.dossier},"
            f" envoyée à celui du dossier {number}",
            reason=f"decision for {decision.dossier} sent to {number}",
        )
    shown = decision.message_id[:200]
    mine = [m for m in found if m.dossier == number and m.sender_role in _LAWYERS]
    if not mine:
        elsewhere = any(m.dossier not in (None, number) for m in found)
        raise InvalidMessage(
            f"message_id: {shown} est un message d'un autre dossier"
            if elsewhere
            else f"message_id: aucun message d'avocat sous {shown} dans le dossier {number}",
            reason=f"{registry.address} decided unknown {shown} in {number}",
        )
    # The first filed: a message sent again under the same Message-ID is the same act.
    decided = min(mine, key=lambda m: m.message)
    if decided.decided:
        raise CannotDoThat(
            f"message_id: le greffe a déjà statué sur {shown}",
            reason=f"{registry.address}: second decision on {shown}",
        )
    return MessageDecided(
        registry, decided.message, decision.decision == "accepted", decision.reason
    )


def carried_decision(data: bytes) -> RegistryDecision | None:
    """The registry-decision document a message carries, if any (its
    validity checked before, with every document's)."""
    for kind, payload in carried_documents(data):
        if kind == REGISTRY_DECISION:
            try:
                return RegistryDecision.model_validate_json(payload)
            except ValidationError:  # pragma: no cover - refused at the end of DATA before
                raise InvalidMessage(
                    "Document structuré invalide", reason="registry decision unreadable"
                ) from None
    return None


class MessageDecisions:
    """What the submission desk asks of a message the registry sends to a dossier."""

    def __init__(self, messages: DossierMessages) -> None:
        self._messages = messages

    async def record(
        self,
        who: Identity,
        number: str,
        data: bytes,
        summary: MessageSummary,
        arrival: str | None = None,
    ) -> MessageDecided | None:
        """The record to file with ``who``'s message to dossier ``number``: its
        decision, if it carries one (None for every other message). ``arrival``:
        the digest of its bytes as submitted, which a resend shares."""
        if who.role not in REGISTRIES:
            return None
        decision = carried_decision(data)
        if decision is None:
            return None
        found = await self._messages.messages_with_id(decision.message_id)
        try:
            return plan_message_decision(decision, number, found, who)
        except CannotDoThat:
            # Decided already: by this very mail sent again (its 250 lost), which
            # the filer then finds and answers as its first 250, filing nothing.
            sha = hashlib.sha256(data).hexdigest()
            mid = summary.message_id
            filed = (
                await self._messages.decision_filed(who.address, mid, sha, arrival) if mid else None
            )
            if filed is not None:
                return None
            raise
