"""A lawyer sends into a dossier over SMTP; the clerk reads it over IMAP."""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import subprocess
import uuid

import pytest

from tests.e2e.instance import Instance


def send(inst: Instance, who: str = "avocat1", subject: str = "Conclusions") -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    raw = (
        f"From: {inst.address(who)}\r\nTo: {inst.dossier['address']}\r\n"
        f"Subject: [{inst.dossier['number']}] {subject}\r\nMessage-ID: {mid}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Madame, Monsieur,\r\nVeuillez trouver nos conclusions.\r\n"
    ).encode()
    with smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=inst.client_context(who)) as s:
        s.sendmail(inst.address(who), [inst.dossier["address"]], raw)
    return mid, raw


def traced(stored: bytes, raw: bytes) -> bytes:
    """``raw`` behind the one Received line the gateway prepends to a complete message."""
    assert stored.startswith(b"Received: ")
    end = stored.find(b"\r\n")
    while stored[end + 2 : end + 3] == b"\t":
        end = stored.find(b"\r\n", end + 2)
    return stored[: end + 2] + raw


def imap(inst: Instance, who: str) -> imaplib.IMAP4_SSL:
    conn = imaplib.IMAP4_SSL("localhost", inst.port("imaps"), ssl_context=inst.client_context(who))
    conn.authenticate("EXTERNAL", lambda _: b"")
    return conn


def find(conn: imaplib.IMAP4_SSL, mid: str) -> str:
    typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", mid)
    assert typ == "OK"
    uids = data[0].split()
    assert len(uids) == 1, data
    return str(uids[0].decode())


def test_clerk_reads_what_the_lawyer_sent(instance: Instance) -> None:
    mid, raw = send(instance)
    conn = imap(instance, "greffier1")
    try:
        typ, _ = conn.select("INBOX")
        assert typ == "OK"
        uid = find(conn, mid)
        typ, data = conn.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == traced(data[0][1], raw)  # byte-exact after the trace line
        assert b"\\Seen" not in data[0][0]
        typ, data = conn.uid("FETCH", uid, "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert f"[{instance.dossier['number']}] Conclusions".encode() in data[0][1]
        typ, data = conn.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Seen" in data[0]
    finally:
        conn.logout()


def test_sender_keeps_a_copy(instance: Instance) -> None:
    mid, raw = send(instance)
    conn = imap(instance, "avocat1")
    try:
        assert conn.select('"Envoy&AOk-s"')[0] == "OK"
        uid = find(conn, mid)
        typ, data = conn.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == traced(data[0][1], raw)
        assert b"\\Seen" in data[0][0]
    finally:
        conn.logout()


def test_login_selects_certificate_identity_only(instance: Instance) -> None:
    conn = imaplib.IMAP4_SSL(
        "localhost", instance.port("imaps"), ssl_context=instance.client_context("greffier1")
    )
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHORIZATIONFAILED"):
            conn.login(instance.address("avocat1"), "whatever")
        typ, _ = conn.login(instance.address("greffier1"), "ignored")
        assert typ == "OK"
    finally:
        conn.logout()


def test_other_lawyer_does_not_see_service_mail(instance: Instance) -> None:
    mid, _ = send(instance)
    conn = imap(instance, "avocat3")
    try:
        conn.select("INBOX")
        typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", mid)
        assert typ == "OK" and data[0] == b""
    finally:
        conn.logout()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_imaps_fetch(instance: Instance) -> None:
    _, raw = send(instance, subject="curl lit")
    base = [
        "curl",
        "-sS",
        "--cacert",
        str(instance.ca),
        "--cert",
        str(instance.cert("greffier1")),
        "--key",
        str(instance.key("greffier1")),
        "--login-options",
        "AUTH=EXTERNAL",
        "-u",
        f"{instance.address('greffier1')}:",
    ]
    url = f"imaps://localhost:{instance.port('imaps')}/INBOX"
    out = subprocess.run(
        [*base, url, "-X", 'UID SEARCH SUBJECT "curl lit"'],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    uid = out.stdout.decode().split()[-1]
    out = subprocess.run([*base, f"{url};UID={uid}"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == traced(out.stdout, raw)


def test_imap_tools_client(instance: Instance) -> None:
    from imap_tools import MailBox

    mid, _ = send(instance, subject="imap-tools")
    with MailBox(
        "localhost", instance.port("imaps"), ssl_context=instance.client_context("greffier1")
    ).login(instance.address("greffier1"), "ignored", initial_folder="INBOX") as mb:
        subjects = [m.subject for m in mb.fetch(mark_seen=False) if m.obj.get("Message-ID") == mid]
        assert subjects == [f"[{instance.dossier['number']}] imap-tools"]


def test_dot_stuffing_round_trip(instance: Instance) -> None:
    """Lines starting with a dot, or ending with one, come back byte-exact."""
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    raw = (
        f"From: {instance.address('avocat1')}\r\nTo: {instance.dossier['address']}\r\n"
        f"Subject: [{instance.dossier['number']}] points\r\nMessage-ID: {mid}\r\n\r\n"
        ".premiere ligne\r\netc.\r\n..deux points\r\n.\r\nfin.\r\n"
    ).encode()
    with smtplib.SMTP_SSL(
        "localhost", instance.port("smtps"), context=instance.client_context("avocat1")
    ) as s:
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], raw)
    conn = imap(instance, "greffier1")
    try:
        conn.select("INBOX")
        uid = find(conn, mid)
        typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
        # Sent without Date: the gateway added it after its trace line.
        assert typ == "OK" and data[0][1].startswith(b"Received: ") and data[0][1].endswith(raw)
    finally:
        conn.logout()
