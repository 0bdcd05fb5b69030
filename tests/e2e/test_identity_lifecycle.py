"""Renewed cards on a running gateway: the same number reaches the same account
and history (A); another number for a known address is refused until an
operator links it (B); a duplicate account merged into the other brings its
mail along, and its card reaches the merged account (C). Every operator's
error exits non-zero naming what is wrong."""

from __future__ import annotations

import imaplib
import json
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from palais.pki.devpki import IssuedIdentity
from tests.e2e.instance import Instance, create_instance

REFUSED = (ssl.SSLError, ConnectionError, smtplib.SMTPException, EOFError, imaplib.IMAP4.error)


def subjects(imap: imaplib.IMAP4_SSL, box: str) -> list[str]:
    assert imap.select(box, readonly=True)[0] == "OK"
    status, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    if status != "OK":
        return []
    return [
        item[1].decode().split(":", 1)[1].strip()
        for item in data
        if isinstance(item, tuple) and b":" in item[1]
    ]


def draft(imap: imaplib.IMAP4_SSL, sender: str, subject: str) -> None:
    body = (
        f"From: {sender}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@t>\r\n"
        "\r\nbrouillon\r\n"
    ).encode()
    assert imap.append("Brouillons", None, None, body)[0] == "OK"


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def connects(inst: Instance, card: IssuedIdentity) -> bool:
    try:
        inst.imap_card(card).logout()
    except REFUSED:
        return False
    return True


def audit(inst: Instance, action: str) -> list[dict[str, Any]]:
    return inst.admin_json("audit", "--action", action)  # in this process: it is read back


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = create_instance(tmp_path_factory.mktemp("identity") / "instance")
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def test_case_a_a_renewed_card_reaches_the_same_mailbox_and_history(gateway: Instance) -> None:
    gateway.submit("avant le renouvellement", who="avocat1")
    renewed = gateway.new_card("avocat1-2027", gateway.address("avocat1"), "CNB-33-012345")
    imap = gateway.imap_card(renewed)
    try:
        assert any("avant le renouvellement" in s for s in subjects(imap, '"Envoy&AOk-s"'))
    finally:
        imap.logout()
    (linked,) = audit(gateway, "certificate-linked")
    assert linked["subject"] == gateway.address("avocat1")
    assert linked["detail"]["by"] == "holder"
    # The old card still works: both are the holder's until one expires.
    old = imaplib.IMAP4_SSL(
        "localhost",
        gateway.port("imaps"),
        ssl_context=gateway.client_context("avocat1"),
        timeout=30,
    )
    old.authenticate("EXTERNAL", lambda _: b"")
    old.logout()


def test_case_b_another_number_is_refused_until_an_operator_links_it(gateway: Instance) -> None:
    address = gateway.address("avocat2")
    other = gateway.new_card("avocat2-other", address, "CNB-33-777777")
    assert not connects(gateway, other)
    done = gateway.admin("cert", "link", address, str(other.cert_path), "--reason", "carte refaite")
    assert done.returncode == 0, done.stderr
    assert other.fingerprint in done.stdout and address in done.stdout
    assert wait_for(lambda: connects(gateway, other))
    events = [e for e in audit(gateway, "certificate-linked") if e["detail"]["by"] == "operator"]
    assert [(e["subject"], e["reason"]) for e in events] == [(address, "carte refaite")]
    # Linking it again is refused, naming why.
    status, err = gateway.admin_here("cert", "link", address, str(other.cert_path), "--reason", "x")
    assert status == 1 and "already linked" in err


def test_case_c_a_merged_duplicate_brings_its_mail_and_its_card_along(gateway: Instance) -> None:
    into = gateway.address("avocat3")
    duplicate = "sarah.petit.bis@avocats.palais.test"
    dup_card = gateway.new_card("avocat3-dup", duplicate, "CNB-75-555555")
    imap = gateway.imap_card(dup_card)  # registered on first use: a second account
    draft(imap, duplicate, "brouillon du doublon")
    imap.logout()
    original = gateway.imap("avocat3")
    draft(original, into, "brouillon du compte")
    original.logout()

    done = gateway.admin("account", "merge", duplicate, into, "--reason", "doublon", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (result["from"], result["into"], result["placements_moved"]) == (duplicate, into, 1)

    merged = gateway.imap("avocat3")
    try:
        assert sorted(subjects(merged, "Brouillons")) == [
            "brouillon du compte",
            "brouillon du doublon",
        ]
    finally:
        merged.logout()

    # The duplicate's card now proves the merged account (within the cache's seconds).
    def reaches_merged() -> bool:
        try:
            imap = gateway.imap_card(dup_card)
        except REFUSED:
            return False
        try:
            return "brouillon du compte" in subjects(imap, "Brouillons")
        finally:
            imap.logout()

    assert wait_for(reaches_merged)
    (shown,) = gateway.admin_json("account", "show", duplicate)
    assert shown["active"] is False
    (event,) = audit(gateway, "account-merged")
    assert (event["subject"], event["reason"], event["detail"]["into"]) == (
        duplicate,
        "doublon",
        into,
    )


# -- what the operator is told ----------------------------------------------------


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return create_instance(tmp_path_factory.mktemp("identity-idle") / "instance")


def test_every_refusal_exits_non_zero_naming_what_is_wrong(idle: Instance, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    lawyer, clerk = idle.address("avocat1"), idle.address("greffier1")
    cases: list[tuple[list[str], int, str]] = [
        (
            ["cert", "link", "nobody@x.test", str(idle.cert("avocat2")), "--reason", "r"],
            1,
            "no account",
        ),
        (
            ["cert", "link", lawyer, str(tmp_path / "missing.pem"), "--reason", "r"],
            2,
            "missing.pem",
        ),
        (["cert", "link", lawyer, str(garbage), "--reason", "r"], 2, "not a certificate"),
        (["cert", "link", lawyer, str(idle.cert("stranger")), "--reason", "r"], 1, "not trusted"),
        (["cert", "link", lawyer, str(idle.cert("revoked")), "--reason", "r"], 1, "revoked"),
        (["cert", "link", lawyer, str(idle.cert("expired")), "--reason", "r"], 1, "expired"),
        (["cert", "link", lawyer, str(idle.cert("avocat2")), "--reason", "r"], 1, "linked to"),
        (["cert", "link", lawyer, str(idle.cert("greffier1")), "--reason", "r"], 1, "greffier"),
        (["cert", "link", lawyer, str(idle.cert("avocat2")), "--reason", " "], 2, "--reason"),
        (["cert", "link", lawyer, str(idle.cert("avocat2"))], 2, "--reason"),
        (["account", "merge", "nobody@x.test", lawyer, "--reason", "r"], 1, "no account"),
        (["account", "merge", lawyer, "nobody@x.test", "--reason", "r"], 1, "no account"),
        (["account", "merge", lawyer, lawyer, "--reason", "r"], 1, "itself"),
        (["account", "merge", lawyer, clerk, "--reason", "r"], 1, "greffier"),
        (["account", "merge", lawyer, idle.address("avocat2")], 2, "--reason"),
    ]
    for args, status, says in cases:
        code, stderr = idle.admin_here(*args)
        assert (code, says in stderr) == (status, True), (args, stderr)
    # Nothing was changed by any of them.
    assert audit(idle, "certificate-linked") == audit(idle, "account-merged") == []


def test_a_gateway_set_to_refuse_unknown_cards_registers_nobody(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "closed", extra_config='[accounts]\nenrolment = "refuse"\n')
    inst.start()
    try:
        stranger = inst.new_card("nouveau", "nouveau.confrere@avocats.palais.test", "B999")
        assert not connects(inst, stranger)
        # Cards already known still reach their accounts.
        imap = inst.imap("avocat1")
        imap.logout()
        status, err = inst.admin_here("account", "show", "nouveau.confrere@avocats.palais.test")
        assert status == 1, err
    finally:
        inst.stop()
