from __future__ import annotations

import pytest

from palais.mailbox.boxes import BoxKind
from palais.mailbox.errors import InvalidMessage, SenderMismatch
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import header_size, summarize
from palais.mailbox.routing import Addressee, AddresseeKind, check_sender, plan_filing

RAW = (
    b"From: =?utf-8?q?Camille_Dupont?= <camille@avocats.test>\r\n"
    b"To: 2025-0000138@dossiers.test\r\n"
    b"Subject: =?utf-8?q?[2025-0000138]_R=C3=A9plique?=\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <abc@x>\r\n"
    b"\r\n"
    b"Corps\r\n"
)


def test_summary_decodes_headers() -> None:
    s = summarize(RAW)
    assert s.subject == "[2025-0000138] Réplique"
    assert s.from_addr == "Camille Dupont <camille@avocats.test>"
    assert s.message_id == "<abc@x>"
    assert s.sent_date is not None and s.sent_date.utcoffset() is not None
    assert s.header_size == RAW.index(b"\r\n\r\n") + 4
    assert s.has_body


def test_summary_of_raw_utf8_and_mixed_encoded_words() -> None:
    raw = (
        'From: =?utf-8?q?Andr=C3=A9?= <andre@x.test>, "Zoé Bernard" <zoe@y.test>\r\n'
        "Subject: Café =?utf-8?q?d=C3=A9j=C3=A0?= servi\r\n"
        "To: a@x.test,\r\n\tb@y.test\r\n"
        "Message-ID:\r\n <folded@x>\r\n"
        "\r\ncorps\r\n"
    ).encode()
    s = summarize(raw)
    assert s.subject == "Café déjà servi"
    assert s.from_addr == "André <andre@x.test>, Zoé Bernard <zoe@y.test>"
    assert s.to_addr == "a@x.test, b@y.test"
    assert s.message_id == "<folded@x>"


def test_summary_never_keeps_undecodable_bytes() -> None:
    s = summarize(b"Subject: caf\xe9 latin-1\r\nBad line without colon\r\nTo: a@x\r\n\r\nx")
    assert s.subject == "caf\ufffd latin-1"
    s.subject.encode("utf-8")  # storable as it is
    assert s.to_addr == "a@x"


def test_header_size_bare_lf() -> None:
    assert header_size(b"A: b\n\nbody") == 6
    assert header_size(b"A: b\r\n") == 6


def test_no_header_refused() -> None:
    with pytest.raises(InvalidMessage):
        summarize(b"\r\njust a body")


def _who(owner: str = "a@x") -> Identity:
    return Identity(1, "a@x", Role.AVOCAT, "A", "f" * 64, owner)


def test_sender_must_be_self() -> None:
    check_sender(_who(), "A@X")
    with pytest.raises(SenderMismatch):
        check_sender(_who(), "b@x")


def test_clerk_may_send_as_service() -> None:
    check_sender(_who(owner="greffe@x"), "greffe@x")


def test_plan_files_once_per_mailbox() -> None:
    d = Addressee("d@x", AddresseeKind.DOSSIER, "greffe@x", dossier="2025-0000138")
    s = Addressee("greffe@x", AddresseeKind.SERVICE, "greffe@x")
    plan = plan_filing(_who(), [d, s])
    assert plan.dossier == "2025-0000138"
    assert [(x.owner, x.kind) for x in plan.destinations] == [
        ("a@x", BoxKind.ENVOYES),
        ("greffe@x", BoxKind.RECUS),
    ]
    assert "\\Seen" in plan.destinations[0].flags
