"""The field's scenario, from ordinary clients: drafts, sending, reading,
replying, delete / restore / permanent delete, copies, refusals, IDLE."""

from __future__ import annotations

import imaplib
import re
import select
import smtplib
import time
import uuid

import pytest

from tests.e2e.instance import Instance

Q = '"Supprim&AOk-s"'
SENT = '"Envoy&AOk-s"'


def imap(inst: Instance, who: str) -> imaplib.IMAP4_SSL:
    conn = imaplib.IMAP4_SSL("localhost", inst.port("imaps"), ssl_context=inst.client_context(who))
    conn.authenticate("EXTERNAL", lambda _: b"")
    return conn


def smtp(inst: Instance, who: str) -> smtplib.SMTP_SSL:
    s = smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=inst.client_context(who))
    s.ehlo()
    return s


def eml(
    frm: str, to: list[str], subject: str, mid: str, body: str = "Bonjour,\r\nCordialement."
) -> bytes:
    return (
        f"From: {frm}\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n{body}\r\n"
    ).encode()


def uids(conn: imaplib.IMAP4_SSL, *criteria: str) -> list[str]:
    typ, data = conn.uid("SEARCH", *criteria)
    assert typ == "OK", data
    return [uid.decode() for uid in data[0].split()]


def by_mid(conn: imaplib.IMAP4_SSL, mid: str) -> list[str]:
    return uids(conn, "HEADER", "Message-ID", mid)


def code_of(typ_data: tuple[str, list[bytes]]) -> str:
    typ, data = typ_data
    return f"{typ} {data[0].decode() if data and data[0] else ''}"


def new_mid() -> str:
    return f"<{uuid.uuid4().hex}@palais.test>"


def test_field_scenario(instance: Instance) -> None:
    n = instance.dossier["number"]
    dossier_addr = instance.dossier["address"]
    a1, a2, g1 = (instance.address(x) for x in ("avocat1", "avocat2", "greffier1"))
    mid = new_mid()
    lawyer = imap(instance, "avocat1")
    clerk = imap(instance, "greffier1")
    other = imap(instance, "avocat2")
    try:
        # avocat1 drafts in the global view; the draft lands in the dossier too.
        v1 = eml(a1, [dossier_addr], f"[{n}] Demande de renvoi", mid, "Premier jet")
        typ, appended = lawyer.append("Brouillons", "(\\Draft)", None, v1)
        assert typ == "OK" and b"APPENDUID" in appended[0]
        lawyer.select(f'"Dossiers/{n}/Brouillons"')
        assert len(by_mid(lawyer, mid)) == 1

        # ...modifies it the way Thunderbird does: new version, old one expunged.
        v2 = eml(a1, [dossier_addr, a2], f"[{n}] Demande de renvoi", mid, "Version finale")
        assert lawyer.append("Brouillons", "(\\Draft)", None, v2)[0] == "OK"
        lawyer.select("Brouillons")
        old, new = by_mid(lawyer, mid)
        lawyer.uid("STORE", old, "+FLAGS", "(\\Deleted)")
        lawyer.expunge()
        assert by_mid(lawyer, mid) == [new]
        lawyer.select(Q)
        assert by_mid(lawyer, mid) == []  # a deleted draft never goes through Supprimés

        # ...and sends it, with a copy to avocat2: the draft leaves Brouillons.
        with smtp(instance, "avocat1") as s:
            s.sendmail(a1, [dossier_addr, a2], v2)
        lawyer.select("Brouillons")
        assert by_mid(lawyer, mid) == []
        lawyer.select(SENT)
        (sent_uid,) = by_mid(lawyer, mid)
        # Thunderbird then files its own copy in Envoyés: no duplicate.
        typ, appended = lawyer.append(SENT, "(\\Seen)", None, v2)
        assert typ == "OK"
        assert re.search(rb"APPENDUID \d+ " + sent_uid.encode() + rb"\]", appended[0]), appended
        assert by_mid(lawyer, mid) == [sent_uid]

        # greffier1 reads: the message becomes read, in both views of the service.
        clerk.select("INBOX")
        (c_uid,) = by_mid(clerk, mid)
        typ, data = clerk.uid("FETCH", c_uid, "(FLAGS)")
        assert b"\\Seen" not in data[0]
        clerk.uid("FETCH", c_uid, "(BODY[])")
        clerk.select(f'"Dossiers/{n}/Re&AOc-us"')
        (d_uid,) = by_mid(clerk, mid)
        typ, data = clerk.uid("FETCH", d_uid, "(FLAGS)")
        assert b"\\Seen" in data[0]

        # avocat2 sees the copy addressed to them.
        other.select("INBOX")
        assert len(by_mid(other, mid)) == 1

        # greffier1 replies to the lawyer; the dossier comes from the subject.
        reply_mid = new_mid()
        reply = eml(g1, [a1], f"Re: [{n}] Demande de renvoi", reply_mid, "Renvoi accordé.")
        with smtp(instance, "greffier1") as s:
            s.sendmail(g1, [a1], reply)
        lawyer.select("INBOX")
        (r_uid,) = by_mid(lawyer, reply_mid)
        typ, data = lawyer.uid("FETCH", r_uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert f"Subject: [{n}] Re: Demande de renvoi".encode() in data[0][1]

        # avocat1 deletes the reply, restores it, deletes it again, then for good.
        assert lawyer.uid("MOVE", r_uid, Q)[0] == "OK"
        assert by_mid(lawyer, reply_mid) == []
        lawyer.select(Q)
        (t_uid,) = by_mid(lawyer, reply_mid)
        typ, data = lawyer.uid("MOVE", t_uid, SENT)  # not where it came from
        assert typ == "NO" and b"[CANNOT]" in data[0]
        assert lawyer.uid("MOVE", t_uid, "INBOX")[0] == "OK"
        lawyer.select(f'"Dossiers/{n}/Re&AOc-us"')
        (back,) = by_mid(lawyer, reply_mid)
        assert lawyer.uid("MOVE", back, Q)[0] == "OK"  # delete from the dossier view
        lawyer.select(Q)
        (t_uid,) = by_mid(lawyer, reply_mid)
        lawyer.uid("STORE", t_uid, "+FLAGS", "(\\Deleted)")
        assert lawyer.expunge()[0] == "OK"
        for box in ("INBOX", Q, f'"Dossiers/{n}/Supprim&AOk-s"', f'"Dossiers/{n}/Re&AOc-us"'):
            lawyer.select(box)
            assert by_mid(lawyer, reply_mid) == [], box
    finally:
        for c in (lawyer, clerk, other):
            c.logout()


def test_avocat3_is_refused(instance: Instance) -> None:
    with smtp(instance, "avocat3") as s:
        s.mail(instance.address("avocat3"))
        code, text = s.rcpt(instance.dossier["address"])
        assert (code, text[:6]) == (550, b"5.7.1 ")


def test_copy_to_non_participant_refused(instance: Instance) -> None:
    with smtp(instance, "avocat1") as s:
        s.mail(instance.address("avocat1"))
        assert s.rcpt(instance.dossier["address"])[0] == 250
        code, text = s.rcpt(instance.address("avocat3"))
        assert (code, text[:6]) == (550, b"5.7.1 ")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [("", b"5.6.0 The subject is empty"), ("[2024-0000001] autre", b"5.6.0 The subject names")],
)
def test_subject_rules(instance: Instance, subject: str, expected: bytes) -> None:
    raw = eml(instance.address("avocat1"), [instance.dossier["address"]], subject, new_mid())
    with smtp(instance, "avocat1") as s:
        s.mail(instance.address("avocat1"))
        s.rcpt(instance.dossier["address"])
        code, text = s.data(raw)
        assert code == 550 and text.startswith(expected), text


def test_subject_prefix_added(instance: Instance) -> None:
    mid = new_mid()
    raw = eml(instance.address("avocat1"), [instance.dossier["address"]], "Sans numero", mid)
    with smtp(instance, "avocat1") as s:
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], raw)
    conn = imap(instance, "greffier1")
    try:
        conn.select("INBOX")
        (uid,) = by_mid(conn, mid)
        _typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert f"[{instance.dossier['number']}] Sans numero".encode() in data[0][1]
    finally:
        conn.logout()


def test_raw_utf8_subject_is_filed(instance: Instance) -> None:
    """8-bit headers (RFC 6532), as clients send them: accepted, filed, searchable."""
    mid = new_mid()
    raw = (
        f"From: {instance.address('avocat1')}\r\nTo: {instance.dossier['address']}\r\n"
        f"Subject: Référé d'heure à heure\r\nMessage-ID: {mid}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nMaître,\r\nCi-joint.\r\n"
    ).encode()
    with smtp(instance, "avocat1") as s:
        refused = s.sendmail(
            instance.address("avocat1"), [instance.dossier["address"]], raw, ["BODY=8BITMIME"]
        )
        assert refused == {}
    conn = imap(instance, "greffier1")
    try:
        conn.select("INBOX")
        (uid,) = by_mid(conn, mid)
        _typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert "Référé d'heure à heure".encode() in data[0][1]
        assert f"[{instance.dossier['number']}] ".encode() in data[0][1]
        # typeshed declares literal as str, but imaplib sends it as bytes.
        conn.literal = "heure à".encode()  # type: ignore[assignment]
        typ, found = conn.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
        assert typ == "OK" and uid.encode() in found[0].split()
    finally:
        conn.logout()


def test_append_to_inbox_refused(instance: Instance) -> None:
    conn = imap(instance, "avocat1")
    try:
        raw = eml(instance.address("avocat1"), [instance.dossier["address"]], "x", new_mid())
        typ, data = conn.append("INBOX", None, None, raw)
        assert typ == "NO" and b"[CANNOT]" in data[0]
    finally:
        conn.logout()


def test_idle_sees_other_sessions_expunge(instance: Instance) -> None:
    mid = new_mid()
    raw = eml(
        instance.address("avocat1"),
        [instance.dossier["address"]],
        f"[{instance.dossier['number']}] idle",
        mid,
    )
    with smtp(instance, "avocat1") as s:
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], raw)
    watcher = imap(instance, "greffier1")
    actor = imap(instance, "greffier1")
    try:
        watcher.select("INBOX")
        actor.select("INBOX")
        (uid,) = by_mid(actor, mid)
        sock = watcher.socket()
        watcher.send(b"I1 IDLE\r\n")
        assert watcher.readline().startswith(b"+")
        actor.uid("MOVE", uid, Q)
        t0 = time.monotonic()
        sock.settimeout(2)
        line = watcher.readline()
        while b"EXPUNGE" not in line and time.monotonic() - t0 < 2:
            line = watcher.readline()
        assert re.match(rb"\* \d+ EXPUNGE", line), line
        assert time.monotonic() - t0 < 1.0
        watcher.send(b"DONE\r\n")
        while not watcher.readline().startswith(b"I1 OK"):
            pass
        _ = select
    finally:
        watcher.logout()
        actor.logout()


def test_older_clients_copy_then_expunge(instance: Instance) -> None:
    """COPY to Supprimés, \\Deleted, EXPUNGE: one deleted message, restorable."""
    n = instance.dossier["number"]
    mid = new_mid()
    raw = eml(
        instance.address("avocat1"), [instance.dossier["address"]], f"[{n}] ancien client", mid
    )
    with smtp(instance, "avocat1") as s:
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], raw)
    conn = imap(instance, "avocat1")
    try:
        conn.select(SENT)
        (uid,) = by_mid(conn, mid)
        typ, data = conn.uid("COPY", uid, Q)
        assert typ == "OK", data
        conn.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
        conn.expunge()
        assert by_mid(conn, mid) == []
        conn.select(Q)
        (t_uid,) = by_mid(conn, mid)
        conn.select(f'"Dossiers/{n}/Supprim&AOk-s"')
        assert len(by_mid(conn, mid)) == 1
        conn.select(Q)
        assert conn.uid("MOVE", t_uid, f'"Dossiers/{n}/Envoy&AOk-s"')[0] == "OK"
        conn.select(SENT)
        assert len(by_mid(conn, mid)) == 1
    finally:
        conn.logout()


def test_imap_tools_delete_and_search(instance: Instance) -> None:
    from imap_tools import AND, MailBox

    n = instance.dossier["number"]
    mid = new_mid()
    raw = eml(
        instance.address("avocat2"), [instance.dossier["address"]], f"[{n}] via imap-tools", mid
    )
    with smtp(instance, "avocat2") as s:
        s.sendmail(instance.address("avocat2"), [instance.dossier["address"]], raw)
    ctx = instance.client_context("greffier1")
    with MailBox("localhost", instance.port("imaps"), ssl_context=ctx).login(
        instance.address("greffier1"), "ignored", initial_folder="INBOX"
    ) as mb:
        found = [m.uid for m in mb.fetch(AND(subject="via imap-tools"), mark_seen=False) if m.uid]
        assert len(found) >= 1
        names = [f.name for f in mb.folder.list()]
        assert "Supprimés" in names and f"Dossiers/{n}/Reçus" in names
        mb.move(found[-1:], "Supprimés")
        mb.folder.set("Supprimés")
        assert [m.uid for m in mb.fetch(AND(subject="via imap-tools"), mark_seen=False)]
