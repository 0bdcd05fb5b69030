"""An APPEND to Supprimés of a message the owner holds is its delete (mbsync's
habit); the boxes that refuse APPEND say why in their own words."""

from __future__ import annotations

import pytest

from palais.mailbox.boxes import BoxRef, check_append
from palais.mailbox.deletion import Duplicate
from palais.mailbox.drafts import DeleteHeld, SentCopy, plan_append, plan_delete_copy
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind, HeldPlacement, Placement

N = "2025-0000138"
TRASH = BoxRef(BoxKind.SUPPRIMES, None)
SUMMARY = MessageSummary(10, "x", "a@x", "", "", "", "<m@x>", None, True)


def held(kind: BoxKind, pid: int = 1, dossier: str | None = N) -> HeldPlacement:
    return HeldPlacement(7, frozenset({"\\Seen", "\\Deleted"}), Placement(pid, 40, kind, dossier))


def test_append_to_supprimes_of_a_received_message_deletes_it() -> None:
    plan = plan_append(
        TRASH, SUMMARY, frozenset(), sent_uid=None, dossier_at={}, held=[held(BoxKind.RECUS)]
    )
    assert isinstance(plan, DeleteHeld)
    (step,) = plan.move.steps
    # As a COPY to Supprimés: it remembers where it came from, without \Deleted.
    assert step == Duplicate(
        held(BoxKind.RECUS), BoxKind.SUPPRIMES, BoxKind.RECUS, frozenset({"\\Seen"})
    )


def test_the_received_or_sent_placement_goes_before_a_receipt() -> None:
    plan = plan_delete_copy(TRASH, None, [held(BoxKind.ACCUSES, 1), held(BoxKind.ENVOYES, 2)])
    assert isinstance(plan, DeleteHeld)
    assert plan.move.steps[0].held.placement.kind is BoxKind.ENVOYES


def test_already_in_supprimes_is_answered_with_that_entry() -> None:
    assert plan_delete_copy(TRASH, 12, [held(BoxKind.RECUS)]) == SentCopy(12)


def test_refusals_say_why() -> None:
    with pytest.raises(CannotDoThat, match="not in your mailbox"):
        plan_delete_copy(TRASH, None, [])
    with pytest.raises(CannotDoThat, match="not in this dossier"):
        plan_delete_copy(BoxRef(BoxKind.SUPPRIMES, "2025-0000999"), None, [held(BoxKind.RECUS)])
    with pytest.raises(CannotDoThat, match="Receipts cannot be deleted"):
        plan_delete_copy(TRASH, None, [held(BoxKind.ACCUSES)])
    with pytest.raises(CannotDoThat, match="draft is gone for good"):
        plan_delete_copy(TRASH, None, [held(BoxKind.BROUILLONS)])


def test_boxes_refusing_append_say_why_in_their_words() -> None:
    with pytest.raises(CannotDoThat, match="Received mail only arrives from its sender"):
        check_append(BoxKind.RECUS)
    with pytest.raises(CannotDoThat, match="forgery"):
        check_append(BoxKind.ACCUSES)
    with pytest.raises(CannotDoThat, match="Supprimés only takes the messages you delete"):
        check_append(BoxKind.SUPPRIMES)
