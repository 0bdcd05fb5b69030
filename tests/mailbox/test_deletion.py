"""Delete, restore and remove for good, as plans: one test per rule, no storage."""

from __future__ import annotations

import pytest

from palais.mailbox.boxes import BoxRef
from palais.mailbox.deletion import Duplicate, Purge, Relocate, plan_expunge, plan_move
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.model import BoxKind, HeldPlacement, Placement

R, E, S, B = BoxKind.RECUS, BoxKind.ENVOYES, BoxKind.SUPPRIMES, BoxKind.BROUILLONS
N = "2025-0000138"


def held(
    uid: int,
    kind: BoxKind,
    *,
    flags: frozenset[str] = frozenset(),
    origin: BoxKind | None = None,
    dossier: str | None = N,
    message: int | None = None,
) -> HeldPlacement:
    return HeldPlacement(
        uid, flags, Placement(100 + uid, message or 1000 + uid, kind, dossier, origin)
    )


def test_delete_moves_to_supprimes_remembering_the_box() -> None:
    h = held(1, R, flags=frozenset({"\\Seen"}))
    assert plan_move([h], BoxRef(S, None)).steps == (Relocate(h, S, R, frozenset({"\\Seen"})),)


def test_restore_goes_back_without_origin() -> None:
    h = held(1, S, origin=E)
    assert plan_move([h], BoxRef(E, N)).steps == (Relocate(h, E, None, frozenset()),)


def test_restore_elsewhere_is_refused() -> None:
    with pytest.raises(CannotDoThat):
        plan_move([held(1, S, origin=E)], BoxRef(R, None))


def test_deleting_a_draft_purges_it() -> None:
    h = held(1, B)
    assert plan_move([h], BoxRef(S, None)).steps == (Purge(h),)


def test_copying_a_draft_to_supprimes_does_nothing() -> None:
    assert plan_move([held(1, B)], BoxRef(S, None), keep_source=True).steps == ()


def test_copy_duplicates_the_placement() -> None:
    h = held(1, R)
    plan = plan_move([h], BoxRef(S, N), keep_source=True)
    assert plan.steps == (Duplicate(h, S, R, frozenset()),)


def test_a_move_drops_deleted_flag() -> None:
    h = held(1, R, flags=frozenset({"\\Deleted", "\\Seen"}))
    (step,) = plan_move([h], BoxRef(S, None)).steps
    assert isinstance(step, Relocate) and step.flags == {"\\Seen"}


def test_a_message_never_changes_dossier() -> None:
    with pytest.raises(CannotDoThat):
        plan_move([held(1, R)], BoxRef(S, "2025-0000999"))


def test_move_steps_follow_uid_order() -> None:
    plan = plan_move([held(3, R), held(1, R)], BoxRef(S, None))
    assert [s.held.uid for s in plan.steps] == [1, 3]


def test_expunge_only_takes_deleted_entries_among_those_asked() -> None:
    d = frozenset({"\\Deleted"})
    plan = plan_expunge(
        BoxRef(S, N), [held(1, S, flags=d), held(2, S), held(3, S, flags=d)], (), {3}
    )
    assert plan.removed == (3,)


def test_expunge_with_nothing_deleted_is_no_refusal() -> None:
    # Accusés refuses deletion, but an EXPUNGE with nothing flagged is no deletion.
    assert plan_expunge(BoxRef(BoxKind.ACCUSES, None), [held(1, BoxKind.ACCUSES)], ()).steps == ()


def test_expunge_in_supprimes_purges() -> None:
    h = held(1, S, flags=frozenset({"\\Deleted"}), origin=R)
    assert plan_expunge(BoxRef(S, None), [h], ()).steps == (Purge(h),)


def test_expunge_elsewhere_moves_to_supprimes() -> None:
    h = held(1, R, flags=frozenset({"\\Deleted", "\\Seen"}))
    assert plan_expunge(BoxRef(R, N), [h], ()).steps == (Relocate(h, S, R, frozenset({"\\Seen"})),)


def test_expunge_of_a_message_already_in_supprimes_only_removes_it_here() -> None:
    h = held(1, R, flags=frozenset({"\\Deleted"}), message=7)
    assert plan_expunge(BoxRef(R, None), [h], {7}).steps == (Purge(h),)


def test_expunge_in_accuses_is_refused() -> None:
    with pytest.raises(CannotDoThat):
        plan_expunge(
            BoxRef(BoxKind.ACCUSES, None),
            [held(1, BoxKind.ACCUSES, flags=frozenset({"\\Deleted"}))],
            (),
        )
