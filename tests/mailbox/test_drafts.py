"""Drafts and the client's own sent copies, as plans: one test per rule."""

from __future__ import annotations

import pytest

from palais.mailbox.boxes import BoxRef
from palais.mailbox.drafts import (
    SaveDraft,
    SentCopy,
    SupersededDrafts,
    addresses_written_to,
    draft_dossier,
    plan_append,
    plan_sent_copy,
    supersedes_drafts,
)
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind

N = "2025-0000138"


def summary(subject: str = "x", to: str = "", cc: str = "") -> MessageSummary:
    return MessageSummary(10, subject, "a@x", to, cc, "", "<m@x>", None, True)


def test_the_clients_sent_copy_is_answered_with_ours() -> None:
    assert plan_sent_copy(42) == SentCopy(42)


def test_a_sent_copy_of_nothing_sent_is_refused() -> None:
    with pytest.raises(CannotDoThat):
        plan_sent_copy(None)


def test_append_to_envoyes_is_a_sent_copy() -> None:
    got = plan_append(
        BoxRef(BoxKind.ENVOYES, None), summary(), frozenset(), sent_uid=5, dossier_at={}
    )
    assert got == SentCopy(5)


def test_append_to_brouillons_saves_a_draft_with_its_flags() -> None:
    got = plan_append(
        BoxRef(BoxKind.BROUILLONS, N),
        summary(),
        frozenset({"\\Draft"}),
        sent_uid=None,
        dossier_at={},
    )
    assert got == SaveDraft(BoxKind.BROUILLONS, N, frozenset({"\\Draft"}))


def test_append_elsewhere_is_refused() -> None:
    with pytest.raises(CannotDoThat):
        plan_append(
            BoxRef(BoxKind.RECUS, None), summary(), frozenset(), sent_uid=None, dossier_at={}
        )


def test_a_draft_in_a_dossier_box_belongs_to_that_dossier() -> None:
    at = {"d@x": "2025-0000999"}
    assert draft_dossier(BoxRef(BoxKind.BROUILLONS, N), summary(to="d@x"), at) == N


def test_a_global_draft_belongs_to_the_dossier_it_is_written_to() -> None:
    s = summary(subject="[2025-0000777] x", to="Someone <p@x>", cc="D@X")
    assert draft_dossier(BoxRef(BoxKind.BROUILLONS, None), s, {"d@x": N}) == N


def test_else_to_the_dossier_its_subject_names() -> None:
    s = summary(subject="Re: [2025-0000777] x", to="p@x")
    assert draft_dossier(BoxRef(BoxKind.BROUILLONS, None), s, {}) == "2025-0000777"


def test_else_to_no_dossier() -> None:
    assert draft_dossier(BoxRef(BoxKind.BROUILLONS, None), summary(to="p@x"), {}) is None


def test_addresses_come_from_to_and_cc_lowercased() -> None:
    assert addresses_written_to(summary(to="A <A@X>, b@y", cc="c@z")) == ["a@x", "b@y", "c@z"]


def test_a_sent_message_supersedes_the_senders_drafts() -> None:
    assert supersedes_drafts("me@x", "<m@x>") == SupersededDrafts("me@x", "<m@x>")


def test_without_message_id_nothing_is_superseded() -> None:
    assert supersedes_drafts("me@x", None) is None
    assert supersedes_drafts("me@x", "") is None
