"""Filing plans: one test per rule."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.filing import (
    CommittedRecord,
    Destination,
    EarlierMessage,
    FilingPlan,
    resend_of,
)
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


SINCE = datetime(2026, 1, 1, tzinfo=UTC)
RESENT = FilingPlan(
    N,
    (
        Destination("me@x", BoxKind.ENVOYES, frozenset({"\\Seen"})),
        Destination("greffe@x", BoxKind.RECUS),
    ),
)
BOTH = frozenset({("me@x", BoxKind.ENVOYES), ("greffe@x", BoxKind.RECUS)})
ARRIVAL = "cd" * 32


def earlier(number: int = 7, **changes: Any) -> EarlierMessage:
    base = EarlierMessage(
        number, "me@x", "ab" * 32, 100, ARRIVAL, SINCE + timedelta(minutes=5), True, BOTH
    )
    return replace(base, **changes)


def _resend(
    *found: EarlierMessage, sha256: str = "ab" * 32, arrival: str | None = None
) -> int | None:
    return resend_of(found, "me@x", sha256, SINCE, RESENT, arrival)


def test_the_same_message_again_is_a_resend_of_the_first() -> None:
    assert _resend(earlier(9), earlier(7)) == 7


def test_another_senders_message_is_no_resend() -> None:
    assert _resend(earlier(sender="other@x")) is None


def test_other_bytes_are_no_resend() -> None:
    assert _resend(earlier(sha256="cd" * 32)) is None
    assert _resend(earlier(sha256="cd" * 32), arrival="ef" * 32) is None


def test_the_same_bytes_submitted_again_are_a_resend_however_completed() -> None:
    # Another node completed the copy with its own trace line: the bytes
    # stored differ, those the client sent do not.
    assert _resend(earlier(), sha256="ee" * 32, arrival=ARRIVAL) == 7
    assert _resend(earlier(arrival=None), sha256="ee" * 32, arrival=ARRIVAL) is None


def test_a_filing_before_the_window_is_no_resend() -> None:
    assert _resend(earlier(accepted=SINCE - timedelta(seconds=1))) is None


def test_a_draft_with_the_same_bytes_is_no_filing() -> None:
    assert _resend(earlier(filed=False)) is None


def test_a_filing_that_missed_a_destination_is_no_answer() -> None:
    assert _resend(earlier(held=frozenset({("me@x", BoxKind.ENVOYES)}))) is None


# A saisine to a court: outside dossiers, the court's Reçus beside the
# lawyer's Saisines/Envoyées.
SAISINE_SENT = FilingPlan(
    None,
    (
        Destination("me@x", BoxKind.SAISINE_ENVOYEE, frozenset({"\\Seen"})),
        Destination("court@x", BoxKind.RECUS),
    ),
)
COURT_HAS_IT = ("court@x", BoxKind.RECUS)


def _act_resend(found: EarlierMessage) -> int | None:
    return resend_of([found], "me@x", "ab" * 32, SINCE, SAISINE_SENT, None)


def test_a_court_act_sent_again_after_its_decision_is_a_resend() -> None:
    awaiting = earlier(
        filed=False, held=frozenset({("me@x", BoxKind.SAISINE_ENVOYEE), COURT_HAS_IT})
    )
    assert _act_resend(awaiting) == 7
    # Rejected: the lawyer's copy moved to Saisines/Rejetées.
    rejected = frozenset({("me@x", BoxKind.SAISINE_REJETEE), COURT_HAS_IT})
    assert _act_resend(earlier(filed=False, held=rejected)) == 7
    # Accepted: it moved into the dossier the decision opened.
    accepted = frozenset({("me@x", BoxKind.ENVOYES), COURT_HAS_IT})
    assert _act_resend(earlier(filed=True, held=accepted)) == 7


def test_a_draft_of_a_court_act_is_no_filing_of_it() -> None:
    draft = frozenset({("me@x", BoxKind.SAISINE_ENREGISTREE)})
    assert _act_resend(earlier(filed=False, held=draft)) is None


def test_a_court_systems_own_filing_needs_every_box_of_its_plan() -> None:
    # Hearing slots or a decision: the court's Envoyés only, no Reçus to tell.
    own = FilingPlan(None, (Destination("court@x", BoxKind.ENVOYES, frozenset({"\\Seen"})),))
    sent = earlier(sender="court@x", filed=False, held=frozenset({("court@x", BoxKind.ENVOYES)}))
    assert resend_of([sent], "court@x", "ab" * 32, SINCE, own) == 7
    kept = earlier(sender="court@x", filed=False, held=frozenset({("court@x", BoxKind.BROUILLONS)}))
    assert resend_of([kept], "court@x", "ab" * 32, SINCE, own) is None
