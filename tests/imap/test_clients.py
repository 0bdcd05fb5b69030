"""Real client libraries and tools against the server: imaplib, imap_tools, curl."""

from __future__ import annotations

import imaplib
import shutil
import subprocess
from typing import Any

import pytest
from imap_tools import AND, MailBox, MailMessageFlags

from tests.imap.conftest import ADDRESS, Pki, ServerThread
from tests.imap.fake_store import FakeStore

RAW = (
    b"From: Greffe CPH Bordeaux <greffe@cph-bordeaux.justice.test>\r\n"
    b"To: " + ADDRESS.encode() + b"\r\n"
    b"Subject: [2025-0000138] Convocation foo\r\n"
    b"Date: Tue, 4 Mar 2025 09:00:00 +0100\r\nMessage-ID: <conv-1@justice.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"Audience du 12 mai 2025, salle 3.\r\n"
)


def content(data: list[Any]) -> bytes:
    """The literal of the first FETCH response in imaplib's result."""
    first = data[0]
    assert isinstance(first, tuple)
    return bytes(first[1])


def head(data: list[Any]) -> bytes:
    first = data[0]
    return bytes(first[0] if isinstance(first, tuple) else first)


def test_imaplib_external_and_byte_exact_fetch(server: ServerThread, pki: Pki) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=pki.client_context())
    try:
        typ, _ = conn.authenticate("EXTERNAL", lambda _: b"")
        assert typ == "OK"
        typ, data = conn.append("INBOX", "(\\Flagged)", None, RAW)
        assert typ == "OK" and b"APPENDUID" in data[0]
        typ, _ = conn.select("INBOX")
        assert typ == "OK"
        typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", "<conv-1@justice.test>")
        assert data == [b"1"]
        typ, data = conn.uid("FETCH", "1", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        assert content(data) == RAW
        assert b"\\Seen" not in head(data)
        typ, data = conn.uid("FETCH", "1", "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert b"Convocation foo" in content(data)
        typ, data = conn.uid("FETCH", "1", "(FLAGS)")
        assert b"\\Seen" in head(data)
        typ, data = conn.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        assert typ == "OK"
        typ, data = conn.expunge()
        assert data == [b"1"]
        typ, listed = conn.list()
        assert typ == "OK" and any(b"Envoy&AOk-s" in head([line]) for line in listed)
    finally:
        conn.logout()


def test_imaplib_login(server: ServerThread, pki: Pki) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=pki.client_context())
    try:
        with pytest.raises(imaplib.IMAP4.error):
            conn.login("someone@else.test", "secret")
        assert conn.login(ADDRESS, "ignored")[0] == "OK"
        typ, data = conn.status("INBOX", "(MESSAGES UIDNEXT)")
        assert typ == "OK" and b"MESSAGES 0" in head(data)
    finally:
        conn.logout()


def test_imap_tools_mailbox(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    server.run(store.deliver, "Dossiers/2025-0000138/Reçus", RAW)
    with MailBox("127.0.0.1", server.port, ssl_context=pki.client_context()).login(
        ADDRESS, "ignored", initial_folder="Dossiers/2025-0000138/Reçus"
    ) as mailbox:
        folders = {f.name: f for f in mailbox.folder.list()}
        assert "Dossiers/2025-0000138/Reçus" in folders
        assert "\\Sent" in folders["Envoyés"].flags
        messages = list(mailbox.fetch(AND(subject="Convocation"), mark_seen=False))
        assert len(messages) == 1
        msg = messages[0]
        assert msg.subject == "[2025-0000138] Convocation foo"
        assert msg.from_ == "greffe@cph-bordeaux.justice.test"
        assert msg.text == "Audience du 12 mai 2025, salle 3.\r\n"
        assert msg.obj.as_bytes().replace(b"\n", b"\r\n").endswith(b"salle 3.\r\n")
        mailbox.flag(str(msg.uid), MailMessageFlags.FLAGGED, True)
        mailbox.move(str(msg.uid), "Supprimés")
        assert mailbox.folder.status("Supprimés")["MESSAGES"] == 1
        assert list(mailbox.uids()) == []
    assert store.flags_of("Supprimés", 1) == {"\\Flagged"}


CURL = shutil.which("curl")


def _curl(pki: Pki, port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run(
        [
            CURL,
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--cacert",
            str(pki.ca),
            "--cert",
            str(pki.client_cert),
            "--key",
            str(pki.client_key),
            *args,
        ],
        capture_output=True,
        check=False,
        timeout=20,
    )


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_fetch_and_search_with_login(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    server.run(store.deliver, "INBOX", RAW)
    url = f"imaps://127.0.0.1:{server.port}/INBOX;UID=1"
    done = _curl(pki, server.port, "-u", f"{ADDRESS}:ignored", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == RAW
    search = _curl(
        pki,
        server.port,
        "-u",
        f"{ADDRESS}:ignored",
        f"imaps://127.0.0.1:{server.port}/INBOX",
        "-X",
        "UID SEARCH SUBJECT foo",
    )
    assert search.returncode == 0, search.stderr
    assert search.stdout.strip() == b"* SEARCH 1"


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_with_sasl_external(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    server.run(store.deliver, "INBOX", RAW)
    done = _curl(
        pki,
        server.port,
        "--login-options",
        "AUTH=EXTERNAL",
        "-u",
        f"{ADDRESS}:",
        f"imaps://127.0.0.1:{server.port}/INBOX;UID=1",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == RAW
