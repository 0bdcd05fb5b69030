"""Saisines and constitutions on their way to a juridiction, and its answers.

Each juridiction has an address for saisines and one for constitutions
(``palais.mailbox.juridictions``); ``CourtAddresses`` makes them recipients.
What is written to them is a court act, not a dossier's message:

- a lawyer's saisine (its document for that juridiction, alone to that
  address) is filed in their Saisines/Envoyées with a deposit receipt, and
  in the court system's INBOX, where it fetches it; the saved drafts of it
  (Saisines/Enregistrées, same Message-ID) leave; its date booking takes a
  place of the slot, refused if none is left;
- a lawyer's constitution likewise, in their Envoyés, without a receipt;
- the court system of that juridiction answers on the same addresses: a
  registry decision (``palais.mailbox.registry`` plans what it moves), or
  the hearing slots it opens for date booking.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from palais.mailbox.court_events import HearingSlots, RegistryDecision
from palais.mailbox.documents import (
    CONSTITUTION,
    HEARING_SLOTS,
    REGISTRY_DECISION,
    SAISINE,
    carried_documents,
)
from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.errors import InvalidMessage, NotAllowed
from palais.mailbox.evidence import deposit_and_delivery
from palais.mailbox.filing import Destination, Filer, FilingPlan
from palais.mailbox.hearing_slots import SlotBooked, booked_slot
from palais.mailbox.identity import Identity, Role
from palais.mailbox.juridictions import Juridiction, JuridictionDirectory
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind, CommittedRecord
from palais.mailbox.registry import DecisionPlan, SentAct, plan_decision
from palais.mailbox.relay import divert_to_relay
from palais.mailbox.routing import Addressee, AddresseeKind

__all__ = [
    "CourtActs",
    "CourtAddresses",
    "Decided",
    "SentActs",
    "check_court_act_recipient",
    "is_court_act",
]

_LAWYERS = (Role.AVOCAT, Role.COLLABORATEUR)
SEEN = frozenset({"\\Seen"})


class _Book(Protocol):
    async def resolve(self, address: str) -> Addressee | None: ...

    async def participants(self, number: str) -> frozenset[str]: ...


class CourtAddresses:
    """An address book that also knows each juridiction's saisine and constitution addresses."""

    def __init__(self, book: _Book, juridictions: Iterable[Juridiction]) -> None:
        self._book = book
        self._acts: dict[str, Addressee] = {}
        for j in juridictions:
            owner = j.court_system.address
            self._acts[j.saisine_address] = Addressee(
                j.saisine_address, AddresseeKind.SAISINE, owner, juridiction=j.code
            )
            self._acts[j.constitution_address] = Addressee(
                j.constitution_address, AddresseeKind.CONSTITUTION, owner, juridiction=j.code
            )

    async def resolve(self, address: str) -> Addressee | None:
        found = self._acts.get(address.strip().lower())
        return found if found is not None else await self._book.resolve(address)

    async def participants(self, number: str) -> frozenset[str]:
        return await self._book.participants(number)


def is_court_act(addressee: Addressee) -> bool:
    return addressee.kind in (AddresseeKind.SAISINE, AddresseeKind.CONSTITUTION)


def check_court_act_recipient(who: Identity, addressee: Addressee, others: int) -> None:
    """A saisine or constitution address is written to alone, by a lawyer or
    by that juridiction's court system (RCPT: ``others`` recipients so far)."""
    if others:
        raise NotAllowed(
            f"<{addressee.address}> is written to alone",
            reason=f"{who.address}: court act address with other recipients",
        )
    if who.role in _LAWYERS or who.address == addressee.mailbox_owner:
        return
    raise NotAllowed(
        f"<{addressee.address}> takes saisines and constitutions from lawyers",
        reason=f"{who.role} {who.address} wrote to {addressee.address}",
    )


class SentActs(Protocol):
    """Storage's side: the act a decision names, and the decision carried out."""

    async def sent_act(self, court: str, message_id: str) -> SentAct | None:
        """The lawyer's message with this Message-ID the court system received."""
        ...

    async def decide(
        self,
        court: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: DecisionPlan,
        arrival: str | None = None,
    ) -> int:
        """Carry the plan out with the decision mail (``arrival``: the digest of
        its bytes as submitted, ``palais.mailbox.completion.arrival_digest``);
        that mail's row id."""
        ...

    async def decision_filed(
        self, court: str, message_id: str, sha256: str, arrival: str | None = None
    ) -> int | None:
        """The decision mail the court system sent already with this Message-ID
        and these bytes (its 250 lost, it sends it again), if any: its row id.
        The same bytes: those stored, or those submitted (``arrival``): the
        trace line the gateway adds names the second it arrived."""
        ...


@dataclass(frozen=True, slots=True)
class Decided:
    """What a court act filed: the reply's reference and the plan."""

    reference: str
    message_id: int
    sha256: str
    plan: FilingPlan
    resent: bool = False


class CourtActs:
    """Accepts what is written to a juridiction's saisine and constitution addresses."""

    def __init__(
        self,
        juridictions: JuridictionDirectory,
        filer: Filer,
        acts: SentActs,
        *,
        mail_domain: str,
        receipts: bool = True,
        dossier_changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``dossier_changed``: told the number of a dossier a decision created
        or a lawyer joined, once carried out (the Fiche dossier made again)."""
        self._juridictions = juridictions
        self._filer = filer
        self._acts = acts
        self._domain = mail_domain
        self._receipts = receipts
        self._changed = dossier_changed

    async def accept(
        self,
        who: Identity,
        addressee: Addressee,
        data: bytes,
        summary: MessageSummary,
        resend_since: datetime | None = None,
        relayed: frozenset[str] = frozenset(),
        arrival: str | None = None,
    ) -> Decided:
        """``relayed``: court systems whose copy goes to their own SMTP endpoint
        (``palais.mailbox.relay``) rather than their INBOX."""
        juridiction = self._juridictions.get(addressee.juridiction or "")
        if juridiction is None:  # pragma: no cover - the address came from it
            raise NotAllowed(reason=f"no juridiction {addressee.juridiction}")
        documents = carried_documents(data)
        if who.address == juridiction.court_system.address:
            return await self._from_court(
                who, juridiction, documents, data, summary, resend_since, arrival
            )
        wanted = SAISINE if addressee.kind is AddresseeKind.SAISINE else CONSTITUTION
        what = "saisine" if wanted == SAISINE else "constitution"
        mine = [payload for kind, payload in documents if kind == wanted]
        if len(mine) != 1 or len(documents) != 1:
            raise InvalidMessage(
                f"Content-Type: un message à <{addressee.address}> porte une {what}"
                f" ({wanted}) et rien d'autre",
                reason=f"{len(mine)} {what} among {len(documents)} documents",
            )
        named = _juridiction_code(mine[0], wanted)
        if named != juridiction.code:
            raise InvalidMessage(
                f"juridiction: la {what} vise {named}, l'adresse est celle de {juridiction.code}",
                reason=f"{what} for {named} sent to {addressee.address}",
            )
        booking = booked_slot(json.loads(mine[0])) if wanted == SAISINE else None
        plan = self.plan_filing(who, addressee, summary, datetime.now(UTC), booking)
        if relayed:
            plan = divert_to_relay(plan, relayed, who.address)
        filed = await self._filer.file(
            who, data, summary, plan, resend_since=resend_since, arrival=arrival
        )
        return Decided(f"M{filed.message_id}", filed.message_id, filed.sha256, plan, filed.resent)

    def plan_filing(
        self,
        who: Identity,
        addressee: Addressee,
        summary: MessageSummary,
        now: datetime,
        booking: SlotBooked | None = None,
    ) -> FilingPlan:
        """A lawyer's saisine or constitution: their copy, the court system's, and for
        a saisine its deposit receipt and the place its date booking takes."""
        saisine = addressee.kind is AddresseeKind.SAISINE
        kept = BoxKind.SAISINE_ENVOYEE if saisine else BoxKind.ENVOYES
        drafts = BoxKind.SAISINE_ENREGISTREE if saisine else BoxKind.BROUILLONS
        plan = FilingPlan(
            None,
            (
                Destination(who.mailbox_owner, kept, SEEN),
                Destination(addressee.mailbox_owner, BoxKind.RECUS),
            ),
            supersedes=(
                SupersededDrafts(who.mailbox_owner, summary.message_id, drafts)
                if summary.message_id
                else None
            ),
        )
        records: list[CommittedRecord] = []
        if saisine and booking is not None:
            # First: a slot found full refuses the saisine before its receipt is sealed.
            records.append(booking)
        if saisine and self._receipts:
            written = [(addressee.address, addressee.mailbox_owner)]
            records.append(deposit_and_delivery(who, written, None, now))
        return replace(plan, records=tuple(records)) if records else plan

    async def _from_court(
        self,
        court: Identity,
        juridiction: Juridiction,
        documents: list[tuple[str, bytes]],
        data: bytes,
        summary: MessageSummary,
        resend_since: datetime | None = None,
        arrival: str | None = None,
    ) -> Decided:
        kinds = [kind for kind, _ in documents]
        if len(documents) != 1 or kinds[0] not in (REGISTRY_DECISION, HEARING_SLOTS):
            raise InvalidMessage(
                "Content-Type: le système de la juridiction envoie ici une décision du greffe"
                " ou des créneaux d'audience, un seul document",
                reason=f"court system sent {kinds}",
            )
        kind, payload = documents[0]
        own = FilingPlan(None, (Destination(court.mailbox_owner, BoxKind.ENVOYES, SEEN),))
        if kind == HEARING_SLOTS:
            slots = HearingSlots.model_validate_json(payload)
            if slots.juridiction_code != juridiction.code:
                raise NotAllowed(
                    f"juridiction_code: {juridiction.code} publie ses propres créneaux",
                    reason=f"{court.address} published slots of {slots.juridiction_code}",
                )
            # The filer keeps the list with the message (``SlotsPublished``):
            # bookings on every node read it there.
            # Sent again (its 250 lost), the same list is its first filing's.
            filed = await self._filer.file(
                court, data, summary, own, resend_since=resend_since, arrival=arrival
            )
            return Decided(
                f"M{filed.message_id}", filed.message_id, filed.sha256, own, filed.resent
            )
        decision = RegistryDecision.model_validate_json(payload)
        if decision.about == "message":
            raise InvalidMessage(
                "about: une décision sur un message s'envoie à l'adresse du dossier",
                reason="decision about a message sent to a court act address",
            )
        act = await self._acts.sent_act(court.address, decision.message_id)
        if act is None:
            raise InvalidMessage(
                f"message_id: aucune {decision.about} reçue sous {decision.message_id[:200]}",
                reason=f"{court.address} decided unknown {decision.message_id[:200]}",
            )
        if _carries(act.data) != decision.about:
            raise InvalidMessage(
                f"about: le message {decision.message_id[:200]} n'est pas une {decision.about}",
                reason=f"decision about {decision.about} on another kind of act",
            )
        sha = hashlib.sha256(data).hexdigest()
        if act.placement is None and summary.message_id:
            earlier = await self._acts.decision_filed(
                court.address, summary.message_id, sha, arrival
            )
            if earlier is not None:  # the same decision again: its first reply, nothing twice
                return Decided(f"M{earlier}", earlier, sha, FilingPlan(None, ()), resent=True)
        plan = plan_decision(decision, act, court, juridiction, self._domain)
        mid = await self._acts.decide(court, data, summary, plan, arrival)
        number = plan.dossier.number if plan.dossier is not None else plan.joins
        if number is not None and self._changed is not None:
            await self._changed(number)
        return Decided(f"M{mid}", mid, sha, plan.filing)


def _carries(data: bytes) -> str | None:
    for kind, _ in carried_documents(data):
        if kind == SAISINE:
            return "saisine"
        if kind == CONSTITUTION:
            return "constitution"
    return None


def _juridiction_code(payload: bytes, media_type: str) -> str:
    """The juridiction code a (valid) saisine or constitution names."""
    doc = json.loads(payload)
    if media_type == SAISINE:
        return str(doc["juridiction"]["code"])
    return str(doc["dossier"]["juridiction_code"])
