"""Saisines and constitutions: their addresses, their filing, the registry's
decision and the dossier it creates, the dossier search; pure domain rules."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from palais.juridictions_file import SAMPLE, load_directory
from palais.mailbox.boxes import BoxRef, MoveOutcome, decide_expunge, decide_move, parse_box_name
from palais.mailbox.court_events import DossierStatus, Quality, RegistryDecision
from palais.mailbox.documents import CONSTITUTION, SAISINE
from palais.mailbox.dossier_search import dossier_query
from palais.mailbox.drafts import SaveDraft, plan_append
from palais.mailbox.errors import CannotDoThat, InvalidMessage, NotAllowed
from palais.mailbox.evidence import ReceiptOrder
from palais.mailbox.identity import Identity, Role
from palais.mailbox.juridictions import Juridiction
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind, Placement
from palais.mailbox.new_dossier import DossierParty, plan_new_dossier
from palais.mailbox.registry import (
    SentAct,
    life_with_lawyer,
    plan_decision,
    saisine_life,
    service_for,
)
from palais.mailbox.routing import Addressee, AddresseeKind
from palais.mailbox.saisine import Saisine
from palais.mailbox.saisine_flow import CourtAddresses, check_court_act_recipient
from tests.mailbox import court_samples as samples

DIRECTORY = load_directory(SAMPLE)


def _juridiction(code: str) -> Juridiction:
    found = DIRECTORY.get(code)
    assert found is not None
    return found


CPH = _juridiction("CPH-BORDEAUX")
COURT_ADDRESS = CPH.court_system.address
LAWYER = Identity(1, "me@avocats.test", Role.AVOCAT, "Me", "a" * 64, "me@avocats.test")
CLERK = Identity(2, "g@greffes.test", Role.GREFFIER, "G", "b" * 64, "svc@greffes.test")
COURT = Identity(3, COURT_ADDRESS, Role.COURT_SYSTEM, "Portalis", "c" * 64, COURT_ADDRESS)
SAISINE_TO = Addressee(CPH.saisine_address, AddresseeKind.SAISINE, COURT_ADDRESS, None, CPH.code)


class _Nobody:
    async def resolve(self, address: str) -> Addressee | None:
        return None

    async def participants(self, number: str) -> frozenset[str]:
        return frozenset()


def test_the_juridictions_addresses_are_recipients() -> None:
    book = CourtAddresses(_Nobody(), DIRECTORY)
    found = asyncio.run(book.resolve(CPH.saisine_address.upper()))
    assert found == SAISINE_TO
    other = asyncio.run(book.resolve(CPH.constitution_address))
    assert other is not None and other.kind is AddresseeKind.CONSTITUTION
    assert asyncio.run(book.resolve("nobody@palais.test")) is None


def test_a_saisine_address_is_written_to_alone_by_a_lawyer_or_its_court() -> None:
    check_court_act_recipient(LAWYER, SAISINE_TO, 0)
    check_court_act_recipient(COURT, SAISINE_TO, 0)
    with pytest.raises(NotAllowed):
        check_court_act_recipient(CLERK, SAISINE_TO, 0)
    with pytest.raises(NotAllowed):
        check_court_act_recipient(LAWYER, SAISINE_TO, 1)


def test_saisine_boxes_keep_saved_ones_and_move_only_by_decision() -> None:
    ref = parse_box_name("Saisines/Enregistrées")
    assert ref == BoxRef(BoxKind.SAISINE_ENREGISTREE, None)
    assert parse_box_name("Saisines/Rejetées").kind is BoxKind.SAISINE_REJETEE
    summary = summarize(b"Subject: s\r\n\r\nx\r\n")
    plan = plan_append(ref, summary, frozenset(), sent_uid=None, dossier_at={})
    assert plan == SaveDraft(BoxKind.SAISINE_ENREGISTREE, None, frozenset())
    with pytest.raises(CannotDoThat):
        plan_append(
            parse_box_name("Saisines/Envoyées"), summary, frozenset(), sent_uid=None, dossier_at={}
        )
    assert decide_move(BoxKind.SAISINE_ENREGISTREE, None, BoxKind.SUPPRIMES) is MoveOutcome.PURGE
    with pytest.raises(CannotDoThat):
        decide_move(BoxKind.SAISINE_ENVOYEE, None, BoxKind.SAISINE_REJETEE)
    with pytest.raises(CannotDoThat):
        decide_move(BoxKind.RECUS, None, BoxKind.SAISINE_ENVOYEE)
    with pytest.raises(CannotDoThat):
        decide_expunge(BoxKind.SAISINE_ENVOYEE)
    assert decide_expunge(BoxKind.SAISINE_REJETEE) is MoveOutcome.PURGE


def _act(media_type: str, doc: dict[str, Any], kind: BoxKind) -> SentAct:
    msg = EmailMessage()
    msg["Subject"] = "acte"
    msg.set_content("x")
    payload = json.dumps(doc).encode()
    msg.add_attachment(payload, maintype="application", subtype=media_type.split("/")[1])
    placement = Placement(7, 42, kind, None)
    return SentAct(42, LAWYER.address, placement, frozenset({"\\Seen"}), msg.as_bytes())


def _decision(about: str, **fields: Any) -> RegistryDecision:
    return RegistryDecision.model_validate(
        {
            "about": about,
            "message_id": "<m@x>",
            "decided_at": datetime(2026, 11, 30, tzinfo=UTC),
            **fields,
        }
    )


def test_a_rejected_saisine_moves_to_rejetees_with_its_receipt() -> None:
    act = _act(SAISINE, samples.saisine(), BoxKind.SAISINE_ENVOYEE)
    plan = plan_decision(
        _decision("saisine", decision="rejected", reason="pièce manquante"),
        act,
        COURT,
        CPH,
        "palais.test",
    )
    assert (plan.to, plan.to_dossier, plan.dossier) == (BoxKind.SAISINE_REJETEE, None, None)
    assert [(d.owner, d.kind) for d in plan.filing.destinations] == [
        (COURT_ADDRESS, BoxKind.ENVOYES),
        (LAWYER.address, BoxKind.SAISINE_REJETEE),
    ]
    assert plan.receipt is not None and not plan.receipt.accepted
    assert plan.receipt.reason == "pièce manquante"


def test_an_accepted_saisine_creates_its_dossier() -> None:
    act = _act(SAISINE, samples.saisine(), BoxKind.SAISINE_ENVOYEE)
    decision = _decision("saisine", decision="accepted", dossier="2026-0000201")
    plan = plan_decision(decision, act, COURT, CPH, "palais.test")
    new = plan.dossier
    assert new is not None
    assert (new.number, new.address, new.juridiction, new.status) == (
        "2026-0000201",
        "2026-0000201@dossiers.palais.test",
        "CPH-BORDEAUX",
        DossierStatus.PROVISOIRE,
    )
    assert new.service.name == "CPH BORDEAUX - Commerce"
    assert [(p.quality, p.name, p.lawyer) for p in new.parties] == [
        (Quality.DEMANDEUR, "Léger Amélie", LAWYER.address),
        (Quality.DEFENDEUR, "Vins du Médoc SAS", None),
    ]
    assert new.participants == ((LAWYER.address, "avocat"), (COURT_ADDRESS, "juridiction"))
    life = new.life
    assert life is not None and not life.created  # the court's own creation event may come
    assert [(p.id, p.name) for p in life.parties] == [
        ("P1", "Léger Amélie"),
        ("P2", "Vins du Médoc SAS"),
    ]
    assert life.lawyers_of("P1") == (LAWYER.address,) and life.lawyers_of("P2") == ()
    assert life.service == "CPH BORDEAUX - Commerce" and life.juridiction_code == CPH.code
    assert (plan.to, plan.to_dossier) == (BoxKind.ENVOYES, "2026-0000201")
    assert plan.filing.dossier == "2026-0000201"
    assert plan.receipt is not None and plan.receipt.accepted
    # Decided once: the lawyer's copy has moved on.
    with pytest.raises(CannotDoThat):
        plan_decision(
            decision,
            SentAct(42, LAWYER.address, None, frozenset(), act.data),
            COURT,
            CPH,
            "palais.test",
        )


def test_a_constitution_accepted_joins_without_receipt() -> None:
    doc = samples.constitution()
    act = _act(CONSTITUTION, doc, BoxKind.ENVOYES)
    plan = plan_decision(
        _decision("constitution", decision="accepted", dossier="2025-0000138"),
        act,
        COURT,
        CPH,
        "palais.test",
    )
    assert plan.joins == "2025-0000138" and plan.receipt is None
    assert plan.represents == ((Quality.DEFENDEUR, "Vins du Médoc SAS"),)
    with pytest.raises(InvalidMessage):
        plan_decision(
            _decision("constitution", decision="accepted", dossier="2025-0000999"),
            act,
            COURT,
            CPH,
            "palais.test",
        )
    rejected = plan_decision(
        _decision("constitution", decision="rejected", reason="non", dossier="2025-0000138"),
        act,
        COURT,
        CPH,
        "palais.test",
    )
    assert rejected.moved is None and rejected.joins is None and rejected.receipt is None


def test_a_new_dossier_lists_every_broken_rule() -> None:
    other = _juridiction("TJ-BORDEAUX")
    with pytest.raises(CannotDoThat) as caught:
        plan_new_dossier(
            number="2026-12",
            juridiction=CPH,
            service=other.services[0],
            mail_domain="palais.test",
            parties=[],
            participants=[("a@x", "avocat"), ("A@x", "avocat")],
        )
    assert len(caught.value.details) == 4
    party = DossierParty(Quality.DEMANDEUR, "physique", "Léger-Amélie")  # type: ignore[arg-type]
    assert party.folded == "leger amelie"


def test_the_service_a_saisine_names() -> None:
    assert service_for(CPH, "Section commerce").name == "CPH BORDEAUX - Commerce"
    assert service_for(CPH, "???") == CPH.services[0]
    saisine = Saisine.model_validate(samples.saisine())
    assert saisine.service == "Section commerce"


def test_dossier_search_by_number_or_by_names() -> None:
    assert dossier_query({"numero": "2025-0000138"}, DIRECTORY).number == "2025-0000138"
    query = dossier_query(
        {"type": "cph", "juridiction": "cph-bordeaux", "defendeur": "Vins du Médoc"}, DIRECTORY
    )
    assert query.juridiction == CPH and query.defendeur == "vins du medoc"
    assert query.demandeur is None
    with pytest.raises(InvalidMessage) as caught:
        dossier_query({"numero": "138"}, DIRECTORY)
    assert caught.value.details == ("numero: numéro national AAAA-NNNNNNN",)
    with pytest.raises(InvalidMessage) as caught:
        dossier_query({"type": "TJ", "juridiction": "CPH-BORDEAUX"}, DIRECTORY)
    assert caught.value.details == (
        "juridiction: CPH-BORDEAUX n'est pas du type TJ",
        "demandeur: au moins un nom de demandeur ou de défendeur",
    )
    with pytest.raises(InvalidMessage) as caught:
        dossier_query({"demandeur": "Léger"}, DIRECTORY)
    assert caught.value.details == (
        "type: champ obligatoire (CPH, TPROX ou TJ)",
        "juridiction: champ obligatoire (code de la juridiction)",
    )


def test_a_saisine_sent_is_filed_with_its_deposit_receipt() -> None:
    from palais.mailbox.saisine_flow import CourtActs

    acts = CourtActs(
        DIRECTORY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        mail_domain="palais.test",
    )
    summary = summarize(b"Subject: s\r\nMessage-ID: <s@x>\r\n\r\nx\r\n")
    plan = acts.plan_filing(LAWYER, SAISINE_TO, summary, datetime.now(UTC))
    assert [(d.owner, d.kind) for d in plan.destinations] == [
        (LAWYER.address, BoxKind.SAISINE_ENVOYEE),
        (COURT_ADDRESS, BoxKind.RECUS),
    ]
    assert plan.supersedes is not None
    assert plan.supersedes.kind is BoxKind.SAISINE_ENREGISTREE
    assert len(plan.records) == 1 and isinstance(plan.records[0], ReceiptOrder)
    constitution_to = Addressee(
        CPH.constitution_address, AddresseeKind.CONSTITUTION, COURT_ADDRESS, None, CPH.code
    )
    plan = acts.plan_filing(LAWYER, constitution_to, summary, datetime.now(UTC))
    assert plan.records == () and plan.destinations[0].kind is BoxKind.ENVOYES


def test_a_constitution_accepted_constitutes_the_lawyer_in_the_life() -> None:
    saisine = Saisine.model_validate(samples.saisine())
    life = saisine_life("2026-0000201", CPH, CPH.services[0], saisine, LAWYER.address)
    after = life_with_lawyer(life, "Other@X", [(Quality.DEFENDEUR, "vins du medoc sas")])
    assert after.lawyers_of("P2") == ("other@x",) and after.version == life.version + 1
    assert life_with_lawyer(after, "other@x", [(Quality.DEFENDEUR, "Vins du Médoc SAS")]) is after
    assert life_with_lawyer(life, "other@x", [(Quality.DEMANDEUR, "Nobody")]) is life
