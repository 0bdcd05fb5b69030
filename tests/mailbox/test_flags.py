"""Flag changes as plans: one test per rule."""

from __future__ import annotations

import pytest

from palais.mailbox.errors import CannotDoThat
from palais.mailbox.flags import FlagChange, FlaggedEntry, check_storable, plan_flag_change
from palais.mailbox.model import FlagMode

SEEN = frozenset({"\\Seen"})


def entry(uid: int, flags: frozenset[str] = frozenset(), modseq: int = 5) -> FlaggedEntry:
    return FlaggedEntry(uid, flags, modseq, placement=100 + uid)


def test_add_names_the_placement_so_both_views_change() -> None:
    plan = plan_flag_change([entry(1)], FlagMode.ADD, SEEN)
    assert plan.changes == (FlagChange(101, 1, SEEN),)


def test_remove() -> None:
    plan = plan_flag_change([entry(1, SEEN | {"$x"})], FlagMode.REMOVE, SEEN)
    assert plan.changes == (FlagChange(101, 1, frozenset({"$x"})),)


def test_replace() -> None:
    plan = plan_flag_change([entry(1, SEEN)], FlagMode.REPLACE, frozenset({"$x"}))
    assert plan.changes == (FlagChange(101, 1, frozenset({"$x"})),)


def test_an_unchanged_entry_is_not_written() -> None:
    assert plan_flag_change([entry(1, SEEN)], FlagMode.ADD, SEEN).changes == ()


def test_unchangedsince_leaves_newer_entries_alone() -> None:
    plan = plan_flag_change([entry(2, modseq=9), entry(1, modseq=3)], FlagMode.ADD, SEEN, 5)
    assert plan.modified == (2,)
    assert [c.uid for c in plan.changes] == [1]


def test_changes_follow_uid_order() -> None:
    plan = plan_flag_change([entry(3), entry(1)], FlagMode.ADD, SEEN)
    assert [c.uid for c in plan.changes] == [1, 3]


@pytest.mark.parametrize("flag", ["\\Recent", "\\RECENT", "a b", "(x", "x]", "", "%x"])
def test_flags_the_client_cannot_store(flag: str) -> None:
    with pytest.raises(CannotDoThat):
        check_storable([flag])
    with pytest.raises(CannotDoThat):
        plan_flag_change([entry(1)], FlagMode.ADD, frozenset({flag}))


def test_keywords_and_system_flags_can_be_stored() -> None:
    check_storable(["\\Seen", "\\Deleted", "$Label1", "Junk"])
