"""BINARY (RFC 3516) over a real TLS connection: FETCH BINARY[section]<partial>,
BINARY.PEEK, BINARY.SIZE with base64 and quoted-printable undone, literal8 for
decoded bytes holding a NUL, UNKNOWN-CTE, and APPEND of a literal8."""

from __future__ import annotations

import base64
import imaplib

from palais.gateway.imap import codes
from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

PDF = b"%PDF-1.7\r\n" + bytes(range(256)) + b"\r\n%%EOF"
QP_TEXT = "Merci de répondre avant le 12 mai.".encode()  # the CRLF before "--XX" is not the part's


def _mixed() -> bytes:
    pdf = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
    return (
        b"From: a@b.test\r\nSubject: pieces\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Merci de r=C3=A9pondre avant =\r\nle 12 mai.\r\n"
        b"--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + pdf
        + b"--XX\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\nend\r\n"
        b"--XX--\r\n"
    )


def _selected(server: ServerThread, store: FakeStore, raw: RawClient) -> None:
    server.run(store.deliver, "INBOX", _mixed())
    raw.login()
    raw.cmd(b"s", b"SELECT INBOX")


def test_code_and_capability(raw: RawClient) -> None:
    assert codes.UNKNOWN_CTE == b"UNKNOWN-CTE"
    raw.login()
    assert b" BINARY" in raw.cmd(b"a", b"CAPABILITY")[0]


def test_binary_peek_decodes_base64_with_literal8(
    server: ServerThread, store: FakeStore, raw: RawClient
) -> None:
    _selected(server, store, raw)
    lines = raw.cmd(b"A1", b"UID FETCH 1 (BINARY.PEEK[2])")
    # Decoded bytes holding a NUL go as a literal8 (RFC 3516 4.3).
    expected = b"* 1 FETCH (UID 1 BINARY[2] ~{%d}\r\n" % len(PDF) + PDF + b")\r\n"
    assert lines[0] == expected
    assert lines[-1].startswith(b"A1 OK")
    assert store.flags_of("INBOX", 1) == frozenset()  # PEEK: \Seen untouched


def test_binary_partial_and_size(server: ServerThread, store: FakeStore, raw: RawClient) -> None:
    _selected(server, store, raw)
    # The RFC's example is UID FETCH 100 (BINARY.PEEK[1]<100.100>); here part 2.
    lines = raw.cmd(b"A2", b"UID FETCH 1 (BINARY.PEEK[2]<100.100>)")
    assert lines[0] == b"* 1 FETCH (UID 1 BINARY[2]<100> {100}\r\n" + PDF[100:200] + b")\r\n"
    lines = raw.cmd(b"A2b", b"UID FETCH 1 (BINARY.PEEK[2]<5.10>)")  # a NUL in the range
    assert lines[0] == b"* 1 FETCH (UID 1 BINARY[2]<5> ~{10}\r\n" + PDF[5:15] + b")\r\n"
    lines = raw.cmd(b"A3", b"FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2])")
    assert lines[0] == b"* 1 FETCH (BINARY.SIZE[1] %d BINARY.SIZE[2] %d)\r\n" % (
        len(QP_TEXT),
        len(PDF),
    )


def test_binary_quoted_printable_sets_seen(
    server: ServerThread, store: FakeStore, raw: RawClient
) -> None:
    _selected(server, store, raw)
    lines = raw.cmd(b"A4", b"FETCH 1 (BINARY[1])")
    text = b"".join(lines)
    assert b"BINARY[1] {%d}\r\n" % len(QP_TEXT) + QP_TEXT in text  # no NUL: a plain literal
    assert b"\\Seen" in text and "\\Seen" in store.flags_of("INBOX", 1)


def test_unknown_encoding_and_bad_sections(
    server: ServerThread, store: FakeStore, raw: RawClient
) -> None:
    _selected(server, store, raw)
    lines = raw.cmd(b"A5", b"FETCH 1 (BINARY.PEEK[3])")
    assert lines[-1].startswith(b"A5 NO [UNKNOWN-CTE]")
    assert raw.cmd(b"A6", b"FETCH 1 (BINARY.PEEK[1.TEXT])")[-1].startswith(b"A6 BAD")
    assert raw.cmd(b"A7", b"FETCH 1 (BINARY[0])")[-1].startswith(b"A7 BAD")
    assert raw.cmd(b"A8", b"FETCH 1 (BINARY.PEEK[9])")[0] == b"* 1 FETCH (BINARY[9] NIL)\r\n"


def test_append_literal8_keeps_binary_bytes(
    server: ServerThread, store: FakeStore, raw: RawClient
) -> None:
    raw.login()
    body = b"\x00\x01binary\nwith a bare LF\r\n"
    message = (
        b"From: a@b.test\r\nSubject: brut\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + body
    )
    raw.send(b"A9 APPEND Brouillons (\\Draft) ~{%d+}\r\n" % len(message) + message + b"\r\n")
    assert raw.until_tagged(b"A9")[-1].startswith(b"A9 OK [APPENDUID ")
    raw.cmd(b"s", b"SELECT Brouillons")
    lines = raw.cmd(b"B1", b"FETCH 1 (BINARY.PEEK[1] BODY.PEEK[])")
    assert lines[0].startswith(b"* 1 FETCH (BINARY[1] ~{%d}\r\n" % len(body) + body)
    assert message in lines[0]  # stored as sent: the bare LF too


def test_imaplib_fetches_binary(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    server.run(store.deliver, "INBOX", _mixed())
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=pki.client_context())
    try:
        conn.authenticate("EXTERNAL", lambda _: b"")
        conn.select("INBOX")
        typ, data = conn.fetch("1", "(BINARY.PEEK[2])")
        assert typ == "OK"
        first = data[0]
        assert isinstance(first, tuple) and first[1] == PDF
    finally:
        conn.logout()
