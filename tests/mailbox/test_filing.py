"""Filing plans: one test per rule."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.filing import CommittedRecord, Destination, FilingPlan
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import BoxKind
from palais.mailbox.routing import Addressee, AddresseeKind, plan_filing

N = "2025-0000138"
ME = Identity(1, "me@x", Role.AVOCAT, "Me", "f" * 64, "me@x")
DOSSIER = Addressee("d@x", AddresseeKind.DOSSIER, "greffe@x", N)
CLERK = Addressee("clerk@x", AddresseeKind.PERSON, "greffe@x")
OTHER = Addressee("o@x", AddresseeKind.PERSON, "o@x")


def test_the_sender_keeps_a_read_copy_in_envoyes() -> None:
    plan = plan_filing(ME, [DOSSIER])
    assert plan.destinations[0] == Destination("me@x", BoxKind.ENVOYES, frozenset({"\\Seen"}))


def test_each_mailbox_receives_one_copy_however_addressed() -> None:
    plan = plan_filing(ME, [DOSSIER, CLERK, OTHER])
    assert plan.destinations[1:] == (
        Destination("greffe@x", BoxKind.RECUS),
        Destination("o@x", BoxKind.RECUS),
    )


def test_the_dossier_comes_from_its_address() -> None:
    assert plan_filing(ME, [OTHER, DOSSIER]).dossier == N


def test_a_given_dossier_stands() -> None:
    assert plan_filing(ME, [OTHER], "2025-0000999").dossier == "2025-0000999"


def test_a_filing_supersedes_the_senders_drafts_of_the_message() -> None:
    plan = plan_filing(ME, [DOSSIER], N, message_id="<m@x>")
    assert plan.supersedes == SupersededDrafts("me@x", "<m@x>")


def test_without_message_id_no_draft_is_superseded() -> None:
    assert plan_filing(ME, [DOSSIER], N).supersedes is None


@dataclass(frozen=True, slots=True)
class _Note(CommittedRecord):
    text: str


def test_a_plan_carries_records_to_commit_with_it() -> None:
    plan = FilingPlan(N, (), records=(_Note("deposit"),))
    assert plan.records == (_Note("deposit"),)
    with pytest.raises(FrozenInstanceError):
        plan.records[0].text = "altered"  # type: ignore[misc]
