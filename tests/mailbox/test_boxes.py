"""The rules of the five boxes, without sockets or storage: one test per rule."""

from __future__ import annotations

import pytest

from palais.mailbox.boxes import (
    BoxKind,
    BoxRef,
    MoveOutcome,
    boxes_for_dossier,
    check_append,
    decide_expunge,
    decide_move,
    parse_box_name,
)
from palais.mailbox.errors import CannotDoThat, NoSuchMailbox

R, E, S, B, A = (
    BoxKind.RECUS,
    BoxKind.ENVOYES,
    BoxKind.SUPPRIMES,
    BoxKind.BROUILLONS,
    BoxKind.ACCUSES,
)


@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("INBOX", BoxRef(R, None)),
        ("inbox", BoxRef(R, None)),
        ("Envoyés", BoxRef(E, None)),
        ("Supprimés", BoxRef(S, None)),
        ("Brouillons", BoxRef(B, None)),
        ("Accusés de réception", BoxRef(A, None)),
        ("Dossiers/2025-0000138/Reçus", BoxRef(R, "2025-0000138")),
        ("Dossiers/2025-0000138/Accusés de réception", BoxRef(A, "2025-0000138")),
    ],
)
def test_folder_names_designate_boxes(name: str, ref: BoxRef) -> None:
    assert parse_box_name(name) == ref


@pytest.mark.parametrize(
    "name",
    [
        "Dossiers",
        "Dossiers/2025-0000138",
        "Dossiers/2025-138/Reçus",  # not a national number
        "Dossiers/2025-0000138/INBOX",  # a dossier has Reçus, not INBOX
        "Dossiers/2025-0000138/Reçus/Autre",
        "envoyés",  # only INBOX is case-insensitive (RFC 3501)
        "Reçus",  # Reçus exists only inside a dossier
        "",
    ],
)
def test_other_names_are_no_mailbox(name: str) -> None:
    with pytest.raises(NoSuchMailbox):
        parse_box_name(name)


def test_every_box_name_parses_back() -> None:
    for ref in [*boxes_for_dossier("2025-0000138"), *(BoxRef(k, None) for k in BoxKind)]:
        assert parse_box_name(ref.name) == ref


def test_only_global_views_carry_special_use() -> None:
    assert BoxRef(E, None).special_use is not None
    assert BoxRef(E, "2025-0000138").special_use is None
    assert BoxRef(R, None).special_use is None


@pytest.mark.parametrize("kind", [R, E])
def test_deleting_moves_received_and_sent_mail_to_supprimes(kind: BoxKind) -> None:
    assert decide_move(kind, None, S) is MoveOutcome.DELETE


def test_deleting_a_draft_is_permanent() -> None:
    assert decide_move(B, None, S) is MoveOutcome.PURGE


def test_receipts_cannot_be_deleted() -> None:
    with pytest.raises(CannotDoThat):
        decide_move(A, None, S)
    with pytest.raises(CannotDoThat):
        decide_expunge(A)


@pytest.mark.parametrize("origin", [R, E])
def test_restore_goes_back_only_where_it_came_from(origin: BoxKind) -> None:
    assert decide_move(S, origin, origin) is MoveOutcome.RESTORE
    other = E if origin is R else R
    with pytest.raises(CannotDoThat, match="only be restored"):
        decide_move(S, origin, other)


@pytest.mark.parametrize(("kind", "dest"), [(R, E), (E, R), (R, B), (B, E), (A, R), (R, A)])
def test_no_other_move_is_allowed(kind: BoxKind, dest: BoxKind) -> None:
    with pytest.raises(CannotDoThat):
        decide_move(kind, None, dest)


def test_a_move_to_the_same_box_is_refused() -> None:
    with pytest.raises(CannotDoThat, match="already"):
        decide_move(R, None, R)


def test_expunge_purges_in_supprimes_and_brouillons_and_never_loses_mail_elsewhere() -> None:
    assert decide_expunge(S) is MoveOutcome.PURGE
    assert decide_expunge(B) is MoveOutcome.PURGE
    assert decide_expunge(R) is MoveOutcome.DELETE
    assert decide_expunge(E) is MoveOutcome.DELETE


def test_clients_append_only_drafts_and_sent_copies() -> None:
    check_append(B)
    check_append(E)
    for kind in (R, S, A):
        with pytest.raises(CannotDoThat):
            check_append(kind)


def test_inbox_is_case_insensitive_in_ascii_only() -> None:
    assert parse_box_name("InBoX") == BoxRef(R, None)
    with pytest.raises(NoSuchMailbox):
        parse_box_name("ınbox")  # dotless i: "ınbox".upper() == "INBOX" in Python
