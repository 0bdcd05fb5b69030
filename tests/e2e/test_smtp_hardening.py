"""SMTP input hardening with real clients against `palais serve`.

Refused STARTTLS certificates (one log line, counted), malformed commands
(precise codes, nothing echoed raw), content rules (CRLF stored, clean
header), and resends after a lost 250 (the first reply, nothing filed twice).
"""

from __future__ import annotations

import hashlib
import http.client
import imaplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.instance import Instance

Labels = frozenset[tuple[str, str]]


# -- helpers ----------------------------------------------------------------------


def scrape(inst: Instance) -> dict[tuple[str, Labels], float]:
    """Every sample of /metrics as the operator sees it."""
    conn = http.client.HTTPSConnection(
        "localhost", inst.port("https"), context=inst.client_context("admin1"), timeout=10
    )
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
    finally:
        conn.close()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def metric(values: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return values.get((name, frozenset(labels.items())), 0.0)


def log_after(inst: Instance, mark: int, done: Callable[[str], bool], timeout: float = 5) -> str:
    """What the gateway logged since ``mark``, once ``done`` holds (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        text = inst.read_log()[mark:]
        if done(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


class Raw:
    """An SMTP session on a TLS socket, bytes in, reply lines out."""

    def __init__(self, inst: Instance, who: str = "avocat1") -> None:
        ctx = inst.client_context(who)
        sock = socket.create_connection(("127.0.0.1", inst.port("smtps")), timeout=10)
        self.tls = ctx.wrap_socket(sock, server_hostname="localhost")
        self.file = self.tls.makefile("rb")
        assert self.reply()[0].startswith(b"220")

    def reply(self) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def send(self, data: bytes) -> None:
        self.tls.sendall(data)

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()[-1]

    def close(self) -> None:
        self.file.close()
        self.tls.close()


def eml(
    inst: Instance, mid: str | None = None, subject: str = "Conclusions", eol: bytes = b"\r\n"
) -> bytes:
    mid = mid or f"<{uuid.uuid4().hex}@avocats.palais.test>"
    lines = [
        f"From: {inst.address('avocat1')}",
        f"To: {inst.dossier['address']}",
        f"Subject: [{inst.dossier['number']}] {subject}",
        f"Message-ID: {mid}",
        "Date: Mon, 30 Nov 2026 10:00:00 +0100",
        "",
        "Madame, Monsieur,",
        "Veuillez trouver nos conclusions.",
        "",
    ]
    return eol.join(line.encode() for line in lines)


def transaction(raw: Raw, inst: Instance) -> None:
    assert raw.cmd(b"EHLO client").startswith(b"250 ")
    assert raw.cmd(b"MAIL FROM:<" + inst.address("avocat1").encode() + b">").startswith(b"250")
    assert raw.cmd(b"RCPT TO:<" + inst.dossier["address"].encode() + b">").startswith(b"250")
    assert raw.cmd(b"DATA").startswith(b"354")


def send_raw(inst: Instance, data: bytes) -> bytes:
    """DATA with exactly these bytes (no client fixing line endings); the reply."""
    raw = Raw(inst)
    try:
        transaction(raw, inst)
        raw.send(data + b".\r\n")
        return raw.reply()[-1]
    finally:
        raw.close()


def imap(inst: Instance, who: str = "greffier1") -> imaplib.IMAP4_SSL:
    conn = imaplib.IMAP4_SSL("localhost", inst.port("imaps"), ssl_context=inst.client_context(who))
    conn.authenticate("EXTERNAL", lambda _: b"")
    return conn


def stored(inst: Instance, mid: str) -> list[bytes]:
    """The bytes of every message with this Message-ID in the clerk's INBOX."""
    conn = imap(inst)
    try:
        assert conn.select("INBOX", readonly=True)[0] == "OK"
        typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", mid)
        assert typ == "OK"
        found = []
        for uid in data[0].split():
            typ, fetched = conn.uid("FETCH", uid, "(BODY.PEEK[])")
            assert typ == "OK"
            found.append(bytes(fetched[0][1]))
        return found
    finally:
        conn.logout()


def reference(reply: bytes) -> str:
    found = re.match(rb"250 2\.0\.0 Accepted as (M\d+)\r\n", reply)
    assert found, reply
    return found.group(1).decode()


# -- 6: refused certificates on the STARTTLS ports ---------------------------------


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        (None, "no_certificate"),
        ("stranger", "certificate"),
        ("expired", "certificate"),
        ("revoked", "certificate"),
    ],
)
def test_refused_starttls_certificate_is_one_line_and_counted(
    instance: Instance, who: str | None, reason: str
) -> None:
    before = metric(scrape(instance), "palais_refusals_total", listener="submission", reason=reason)
    mark = len(instance.read_log())
    refused = (ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)
    with (
        pytest.raises(refused),
        smtplib.SMTP("localhost", instance.port("submission"), timeout=10) as s,
    ):
        s.ehlo()
        s.starttls(context=instance.client_context(who))
        s.ehlo()
        s.mail(instance.address("avocat1"))
    text = log_after(instance, mark, lambda t: "outcome=tls-" in t)
    assert "Traceback" not in text and "internal error" not in text, text
    lines = [line for line in text.splitlines() if "outcome=tls-" in line]
    assert len(lines) == 1, text
    assert "listener=submission" in lines[0], lines[0]
    assert f"decision=refused outcome=tls-{reason} reason=" in lines[0], lines[0]
    assert re.search(r"peer=127\.0\.0\.1:\d+ ", lines[0]), lines[0]
    after = metric(scrape(instance), "palais_refusals_total", listener="submission", reason=reason)
    assert after == before + 1


@pytest.mark.parametrize(
    ("after", "line"),
    [
        (b"", "decision=closed outcome=tls-aborted"),  # the client left
        (b"GET / HTTP/1.0\r\n\r\n", "decision=refused outcome=tls-handshake"),  # not TLS
    ],
    ids=["client-left", "not-tls"],
)
def test_failed_starttls_handshake_is_one_line(instance: Instance, after: bytes, line: str) -> None:
    words = ("no_certificate", "certificate", "handshake")

    def refusals() -> float:
        values = scrape(instance)
        return sum(
            metric(values, "palais_refusals_total", listener="submission", reason=w) for w in words
        )

    before = refusals()
    mark = len(instance.read_log())
    with (
        socket.create_connection(("127.0.0.1", instance.port("submission")), timeout=10) as raw,
        raw.makefile("rb") as f,
    ):
        assert f.readline().startswith(b"220")
        raw.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220")
        raw.sendall(after)
        time.sleep(0.2)
    text = log_after(instance, mark, lambda t: "outcome=tls-" in t)
    assert "Traceback" not in text and "internal error" not in text, text
    (found,) = [x for x in text.splitlines() if "outcome=tls-" in x]
    assert "listener=submission" in found and line in found, found
    assert refusals() == before + (1 if "refused" in line else 0)


# -- 7: malformed commands ---------------------------------------------------------


def test_non_utf8_addresses_get_syntax_replies(instance: Instance) -> None:
    mark = len(instance.read_log())
    raw = Raw(instance)
    try:
        assert raw.cmd(b"EHLO client").startswith(b"250 ")
        assert raw.cmd(b"MAIL FROM:<\xff\xfe@avocats.palais.test>").startswith(b"501 5.1.7 ")
        me = instance.address("avocat1").encode()
        assert raw.cmd(b"MAIL FROM:<" + me + b">").startswith(b"250 ")
        assert raw.cmd(b"RCPT TO:<\xc3\x28@dossiers.palais.test>").startswith(b"501 5.1.3 ")
        assert raw.cmd(b"NOOP").startswith(b"250 ")
    finally:
        raw.close()
    text = log_after(instance, mark, lambda t: False, timeout=0.3)
    assert "Traceback" not in text and "internal error" not in text, text


@pytest.mark.parametrize("length", [2_000, 100_000])
def test_overlong_auth_external_response(instance: Instance, length: int) -> None:
    mark = len(instance.read_log())
    raw = Raw(instance)
    try:
        assert raw.cmd(b"EHLO client").startswith(b"250 ")
        assert raw.cmd(b"AUTH EXTERNAL").startswith(b"334")
        assert raw.cmd(b"QUFB" * (length // 4)).startswith(b"500 5.5.6 ")
        # Nothing of the long line is taken for a command; the session goes on.
        assert raw.cmd(b"NOOP").startswith(b"250 ")
        assert raw.cmd(b"AUTH EXTERNAL =").startswith(b"235 ")
    finally:
        raw.close()
    text = log_after(instance, mark, lambda t: False, timeout=0.3)
    assert "Traceback" not in text and "internal error" not in text, text


def test_control_characters_are_never_echoed(instance: Instance) -> None:
    raw = Raw(instance)
    replies = []
    try:
        replies.append(raw.cmd(b"EHLO client"))
        replies.append(raw.cmd(b"FOO\x01\x1b[2JBAR"))
        replies.append(raw.cmd(b"MAIL FROM:<" + instance.address("avocat1").encode() + b">"))
        replies.append(raw.cmd(b"RCPT TO:<\x1b[31mevil\x7f@nowhere.palais.test>"))
        replies.append(raw.cmd(b"RCPT TO:<x\x00y@nowhere.palais.test>"))
        replies.append(raw.cmd(b"MAIL\x0bFROM:<a@b>"))
    finally:
        raw.close()
    for reply in replies:
        assert re.fullmatch(rb"\d{3}[ -][\x20-\x7e\x80-\xff]*\r\n", reply), reply
        assert b"\x7f" not in reply
    assert replies[1].startswith(b"500 ")


# -- 8: content rules --------------------------------------------------------------


def test_bare_lf_stored_as_crlf_and_logged_sha_is_of_the_stored_bytes(instance: Instance) -> None:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    mark = len(instance.read_log())
    # As a file on disk sent as it is: LF lines, then the client's <CRLF>.<CRLF>.
    reply = send_raw(instance, eml(instance, mid, eol=b"\n") + b"\r\n")
    ref = reference(reply)
    (got,) = stored(instance, mid)
    assert b"\n" not in got.replace(b"\r\n", b""), got
    assert got.startswith(b"Received: ")  # the gateway's trace line, then the message
    assert eml(instance, mid)[:40] in got
    text = log_after(instance, mark, lambda t: f"ref={ref} " in t)
    (line,) = [line for line in text.splitlines() if f"ref={ref} " in line]
    assert f"sha256={hashlib.sha256(got).hexdigest()}" in line, line


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_upload_without_crlf_is_served_with_crlf(instance: Instance, tmp_path: Path) -> None:
    """The README's own example: curl -T message.eml, an LF file, no --crlf."""
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    path = tmp_path / "message.eml"
    path.write_bytes(eml(instance, mid, eol=b"\n"))
    out = subprocess.run(
        instance.curl_send("avocat1", path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    (got,) = stored(instance, mid)
    assert b"\n" not in got.replace(b"\r\n", b""), got
    assert b"\r\nVeuillez trouver nos conclusions.\r\n" in got


@pytest.mark.parametrize(
    "change",
    [
        (b"Subject: [", b"Subject: \x00["),
        (b"\r\nDate:", b"\r\nX-Note: a\rb\r\nDate:"),
        (b"\r\nDate:", b"\r\nSubject: [2025-0009999] autre\r\nDate:"),
    ],
    ids=["nul", "bare-cr", "second-subject"],
)
def test_unclean_header_refused(instance: Instance, change: tuple[bytes, bytes]) -> None:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    data = eml(instance, mid).replace(*change)
    assert data != eml(instance, mid)
    reply = send_raw(instance, data)
    assert reply.startswith(b"550 5.6.0 "), reply
    assert stored(instance, mid) == []


# -- 10: resends -------------------------------------------------------------------


def smtp_send(inst: Instance, data: bytes) -> bytes:
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        assert s.mail(inst.address("avocat1"))[0] == 250
        assert s.rcpt(inst.dossier["address"])[0] == 250
        code, text = s.data(data)
        return b"%d %s\r\n" % (code, text)


def test_resend_after_a_lost_reply_files_nothing(instance: Instance) -> None:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    data = eml(instance, mid)
    before = scrape(instance)
    mark = len(instance.read_log())
    first = reference(smtp_send(instance, data))
    again = reference(smtp_send(instance, data))
    assert again == first
    assert len(stored(instance, mid)) == 1
    after = scrape(instance)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("palais_smtp_messages_total", listener="smtps", decision="accepted") == 1
    assert grew("palais_smtp_messages_total", listener="smtps", decision="resent") == 1
    assert grew("palais_smtp_data_to_reply_seconds_count", listener="smtps") == 2
    text = log_after(instance, mark, lambda t: "decision=resent" in t)
    assert re.search(rf"decision=resent ref={first} ", text), text


def test_same_message_id_with_other_bytes_is_a_new_message(instance: Instance) -> None:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    first = reference(smtp_send(instance, eml(instance, mid)))
    second = reference(smtp_send(instance, eml(instance, mid, subject="Conclusions n°2")))
    assert first != second
    assert len(stored(instance, mid)) == 2


def test_same_message_to_other_recipients_is_filed(instance: Instance) -> None:
    """A client splitting its recipients over two transactions (after 452 4.5.3)."""
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    data = eml(instance, mid)
    first = reference(smtp_send(instance, data))
    with smtplib.SMTP_SSL(
        "localhost", instance.port("smtps"), context=instance.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        assert s.mail(instance.address("avocat1"))[0] == 250
        assert s.rcpt(instance.address("avocat2"))[0] == 250
        code, text = s.data(data)
    second = reference(b"%d %s\r\n" % (code, text))
    assert second != first
    conn = imap(instance, "avocat2")
    try:
        assert conn.select("INBOX", readonly=True)[0] == "OK"
        typ, found = conn.uid("SEARCH", "HEADER", "Message-ID", mid)
        assert typ == "OK" and len(found[0].split()) == 1
    finally:
        conn.logout()


def test_identical_submissions_in_flight_file_one_message(instance: Instance) -> None:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    data = eml(instance, mid)
    sessions = [Raw(instance) for _ in range(3)]
    try:
        for raw in sessions:
            transaction(raw, instance)
            raw.send(data)
        for raw in sessions:  # every end of data at once
            raw.send(b".\r\n")
        refs = {reference(raw.reply()[-1]) for raw in sessions}
    finally:
        for raw in sessions:
            raw.close()
    assert len(refs) == 1
    assert len(stored(instance, mid)) == 1


def test_refused_message_is_counted(instance: Instance) -> None:
    before = scrape(instance)
    reply = send_raw(instance, eml(instance).replace(b"Subject: [", b"Subject: \x00["))
    assert reply.startswith(b"550 ")
    after = scrape(instance)
    refused = ("palais_smtp_messages_total",)
    assert metric(after, *refused, listener="smtps", decision="refused") == (
        metric(before, *refused, listener="smtps", decision="refused") + 1
    )
