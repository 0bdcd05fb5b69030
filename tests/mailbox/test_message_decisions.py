"""The registry's decision on a lawyer's message in a dossier: pure domain rules."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

import pytest

from palais.mailbox.court_events import RegistryDecision
from palais.mailbox.documents import REGISTRY_DECISION
from palais.mailbox.errors import CannotDoThat, InvalidMessage
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.message_decisions import (
    DossierMessage,
    MessageDecided,
    MessageDecisions,
    plan_message_decision,
)

NUMBER = "2026-0000201"
MID = "<conclusions-1@avocats.palais.test>"
LAWYER = "me@avocats.test"
COURT = Identity(
    3, "portalis@cph.test", Role.COURT_SYSTEM, "Portalis", "c" * 64, "portalis@cph.test"
)
CLERK = Identity(2, "g@greffes.test", Role.GREFFIER, "G", "b" * 64, "svc@greffes.test")
AVOCAT = Identity(1, LAWYER, Role.AVOCAT, "Me", "a" * 64, LAWYER)
MINE = DossierMessage(7, LAWYER, "avocat", NUMBER)


def _decision(**fields: Any) -> RegistryDecision:
    doc = {
        "about": "message",
        "message_id": MID,
        "decision": "accepted",
        "dossier": NUMBER,
        "decided_at": "2026-11-30T11:00:00+01:00",
        **fields,
    }
    return RegistryDecision.model_validate(doc)


def test_an_acceptance_names_the_lawyers_message() -> None:
    planned = plan_message_decision(_decision(), NUMBER, [MINE], COURT)
    assert planned == MessageDecided(COURT, 7, True, None)


def test_a_rejection_carries_its_reason_and_the_first_filed_copy() -> None:
    again = DossierMessage(9, LAWYER, "avocat", NUMBER)
    decision = _decision(decision="rejected", reason="Pièce illisible")
    planned = plan_message_decision(decision, NUMBER, [again, MINE], COURT)
    assert planned == MessageDecided(COURT, 7, False, "Pièce illisible")


@pytest.mark.parametrize(
    ("found", "said"),
    [
        ([], "aucun message d'avocat"),
        ([DossierMessage(7, LAWYER, "avocat", "2026-0000999")], "un autre dossier"),
        ([DossierMessage(7, "g@greffes.test", "greffier", NUMBER)], "aucun message d'avocat"),
        ([DossierMessage(7, LAWYER, "avocat", None)], "aucun message d'avocat"),
    ],
)
def test_only_a_lawyers_message_of_that_dossier_is_decided(
    found: Sequence[DossierMessage], said: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        plan_message_decision(_decision(), NUMBER, found, COURT)
    assert caught.value.text.startswith("message_id: ")
    assert said in caught.value.text


def test_the_decision_must_name_the_dossier_it_is_sent_to() -> None:
    with pytest.raises(InvalidMessage) as caught:
        plan_message_decision(_decision(dossier="2026-0000999"), NUMBER, [MINE], COURT)
    assert caught.value.text.startswith("dossier: ")


def test_a_saisine_decision_goes_to_the_juridictions_address() -> None:
    with pytest.raises(InvalidMessage) as caught:
        plan_message_decision(_decision(about="saisine"), NUMBER, [MINE], COURT)
    assert caught.value.text.startswith("about: ")


class _Filed:
    """The messages filed under each Message-ID (what storage answers)."""

    def __init__(self, *messages: tuple[str, DossierMessage]) -> None:
        self._messages = messages
        self.asked: list[str] = []
        self.filed: dict[tuple[str, str, str], int] = {}  # decision mails: (court, id, sha)

    async def messages_with_id(self, message_id: str) -> Sequence[DossierMessage]:
        self.asked.append(message_id)
        return [m for mid, m in self._messages if mid == message_id]

    async def decision_filed(
        self, court: str, message_id: str, sha256: str, arrival: str | None = None
    ) -> int | None:
        return self.filed.get((court, message_id, sha256))


def _mail(doc: dict[str, Any] | None) -> bytes:
    msg = EmailMessage()
    msg["From"] = COURT.address
    msg["Subject"] = f"[{NUMBER}] Décision"
    msg.set_content("Vu.")
    if doc is not None:
        payload = json.dumps(doc).encode()
        subtype = REGISTRY_DECISION.split("/")[1]
        msg.add_attachment(payload, maintype="application", subtype=subtype, filename="d.json")
    msg["Message-ID"] = "<decision-1@cph.test>"
    return msg.as_bytes()


def _record(decisions: MessageDecisions, who: Identity, data: bytes) -> MessageDecided | None:
    return asyncio.run(decisions.record(who, NUMBER, data, summarize(data)))


def test_the_desk_reads_a_decision_from_the_registry_only() -> None:
    filed = _Filed((MID, MINE))
    decisions = MessageDecisions(filed)
    doc = _decision().model_dump(mode="json")
    assert _record(decisions, COURT, _mail(doc)) == MessageDecided(COURT, 7, True, None)
    assert _record(decisions, CLERK, _mail(doc)) == MessageDecided(CLERK, 7, True, None)
    # A lawyer's mail, or the court's without a decision: nothing asked of storage.
    assert _record(decisions, AVOCAT, _mail(doc)) is None
    assert _record(decisions, COURT, _mail(None)) is None
    assert filed.asked == [MID, MID]


def test_a_message_is_decided_once_but_the_same_decision_may_come_again() -> None:
    decided = DossierMessage(7, LAWYER, "avocat", NUMBER, decided=True)
    with pytest.raises(CannotDoThat) as caught:
        plan_message_decision(_decision(), NUMBER, [decided], COURT)
    assert caught.value.text.startswith("message_id: ")
    filed = _Filed((MID, decided))
    decisions = MessageDecisions(filed)
    data = _mail(_decision().model_dump(mode="json"))
    with pytest.raises(CannotDoThat):  # another decision on it
        _record(decisions, COURT, data)
    sha = hashlib.sha256(data).hexdigest()
    filed.filed[(COURT.address, "<decision-1@cph.test>", sha)] = 12
    # This very decision again (its 250 lost): no record, the filer's resend answers.
    assert _record(decisions, COURT, data) is None
