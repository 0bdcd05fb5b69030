"""A full instance (SQLite store, real migrations): mbsync's way of deleting
(APPEND to Supprimés, then \\Deleted and EXPUNGE in the source), the refusal
texts of the boxes that take no APPEND, and a QRESYNC reconnection that is
told which messages vanished while the client was away."""

from __future__ import annotations

import re

from tests.e2e.instance import Instance
from tests.e2e.test_imap_flow import find, imap, send

TRASH = '"Supprim&AOk-s"'


def _text(response: bytes | tuple[bytes, bytes]) -> bytes:
    """An untagged response as imaplib keeps it: its text (no literal here)."""
    assert isinstance(response, bytes)
    return response


def test_mbsync_moves_to_supprimes_by_append(instance: Instance) -> None:
    mid, _ = send(instance, subject="A supprimer par mbsync")
    conn = imap(instance, "greffier1")
    try:
        assert conn.select("INBOX")[0] == "OK"
        uid = find(conn, mid)
        typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
        stored = data[0][1]
        # mbsync: APPEND the message to the trash, then flag and expunge the original.
        typ, data = conn.append(TRASH, "(\\Seen)", None, stored)
        assert typ == "OK" and b"APPENDUID" in data[0], data
        assert conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        assert conn.uid("EXPUNGE", uid)[0] == "OK"
        typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", mid)
        assert data == [b""]  # gone from INBOX
        assert conn.select(TRASH)[0] == "OK"
        find(conn, mid)  # once, in Supprimés
    finally:
        conn.logout()


def test_boxes_that_refuse_append_say_why(instance: Instance) -> None:
    conn = imap(instance, "avocat1")
    raw = b"From: x@y.test\r\nSubject: forged\r\nMessage-ID: <forged@y.test>\r\n\r\nno\r\n"
    try:
        typ, data = conn.append("INBOX", None, None, raw)
        assert typ == "NO" and data[0].startswith(b"[CANNOT] Received mail only arrives"), data
        typ, data = conn.append('"Accus&AOk-s de r&AOk-ception"', None, None, raw)
        assert typ == "NO" and b"forgery" in data[0], data
        typ, data = conn.append(TRASH, None, None, raw)
        assert typ == "NO" and b"not in your mailbox" in data[0], data
    finally:
        conn.logout()


def test_qresync_reconnection_learns_what_vanished(instance: Instance) -> None:
    ids = [send(instance, subject=f"Resync {n}")[0] for n in range(3)]
    conn = imap(instance, "greffier1")
    try:
        assert conn.enable("QRESYNC")[0] == "OK"
        typ, _ = conn.select("INBOX")
        validity = int(_text(conn.untagged_responses["UIDVALIDITY"][-1]))
        modseq = int(_text(conn.untagged_responses["HIGHESTMODSEQ"][-1]))
        uids = [find(conn, mid) for mid in ids]
    finally:
        conn.logout()
    # Meanwhile, another client deletes the first one and flags the second.
    other = imap(instance, "greffier1")
    try:
        other.select("INBOX")
        other.uid("STORE", uids[0], "+FLAGS.SILENT", "(\\Deleted)")
        other.uid("EXPUNGE", uids[0])
        other.uid("STORE", uids[1], "+FLAGS.SILENT", "(\\Flagged)")
    finally:
        other.logout()
    conn = imap(instance, "greffier1")
    try:
        conn.enable("QRESYNC")
        known = ",".join(uids)
        typ, data = conn._simple_command(  # imaplib has no QRESYNC parameter of its own
            "SELECT", f"INBOX (QRESYNC ({validity} {modseq} {known}))"
        )
        assert typ == "OK", data
        assert conn.untagged_responses["VANISHED"] == [f"(EARLIER) {uids[0]}".encode()]
        fetched = b" ".join(_text(r) for r in conn.untagged_responses["FETCH"])
        assert re.search(
            rb"UID %s FLAGS \([^)]*\\Flagged[^)]*\) MODSEQ" % uids[1].encode(), fetched
        )
        assert b"UID %s " % uids[2].encode() not in fetched  # unchanged: not reported
    finally:
        conn.logout()
