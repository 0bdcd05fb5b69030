"""Login by certificate: EXTERNAL (with and without SASL-IR), LOGIN, refusals, logging."""

from __future__ import annotations

import base64
import imaplib
import socket
import ssl
import time

import pytest

from tests.imap.conftest import ADDRESS, Pki, RawClient, ServerThread


def test_greeting_capabilities(raw: RawClient) -> None:
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert raw.greeting.rstrip().endswith(b"] Palais IMAP ready")
    for cap in (b"AUTH=EXTERNAL", b"SASL-IR", b"LITERAL+", b"ID", b"ENABLE"):
        assert cap in raw.greeting
    assert b"LOGINDISABLED" not in raw.greeting


def test_external_with_initial_response(raw: RawClient) -> None:
    lines = raw.cmd(b"a", b"AUTHENTICATE EXTERNAL =")
    assert lines[-1].startswith(b"a OK [CAPABILITY ")
    assert b"IDLE" in lines[-1] and b"AUTH=" not in lines[-1]


def test_external_with_matching_authzid(raw: RawClient) -> None:
    authzid = base64.b64encode(ADDRESS.upper().encode())
    assert raw.cmd(b"a", b"AUTHENTICATE EXTERNAL " + authzid)[-1].startswith(b"a OK")


def test_external_with_continuation(raw: RawClient) -> None:
    raw.send(b"a AUTHENTICATE EXTERNAL\r\n")
    assert raw.read_response() == b"+ \r\n"
    raw.send(b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")


def test_external_for_someone_else_is_refused(raw: RawClient) -> None:
    authzid = base64.b64encode(b"other@avocats.test")
    lines = raw.cmd(b"a", b"AUTHENTICATE EXTERNAL " + authzid)
    assert lines[-1].startswith(b"a NO [AUTHORIZATIONFAILED]")
    assert raw.cmd(b"b", b"SELECT INBOX")[-1].startswith(b"b BAD")


def test_other_mechanisms_are_refused(raw: RawClient) -> None:
    plain = base64.b64encode(b"\0" + ADDRESS.encode() + b"\0secret")
    assert raw.cmd(b"a", b"AUTHENTICATE PLAIN " + plain)[-1].startswith(b"a NO")
    assert raw.cmd(b"b", b"NOOP")[-1].startswith(b"b OK")


def test_login_selects_certificate_identity_and_ignores_password(raw: RawClient) -> None:
    assert raw.cmd(b"a", b'LOGIN "someone@else.test" x')[-1].startswith(
        b"a NO [AUTHORIZATIONFAILED]"
    )
    assert raw.cmd(b"b", b'LOGIN "' + ADDRESS.encode() + b'" "anything"')[-1].startswith(b"b OK")
    assert raw.cmd(b"c", b"LOGIN x y")[-1].startswith(b"c BAD")  # already authenticated


def test_commands_need_authentication(raw: RawClient) -> None:
    assert raw.cmd(b"a", b'LIST "" *')[-1].startswith(b"a BAD")
    assert raw.cmd(b"b", b"CAPABILITY")[0].startswith(b"* CAPABILITY IMAP4rev1")


def test_unknown_certificate_gets_a_safe_no_then_bye(server: ServerThread, pki: Pki) -> None:
    with RawClient(server.port, pki.client_context(stranger=True)) as client:
        assert client.greeting.startswith(b"* OK")
        lines = client.cmd(b"a", b"AUTHENTICATE EXTERNAL =")
        assert lines[-1] == b"a NO [NOPERM] This certificate is not registered here\r\n"
        assert client.read_response().startswith(b"* BYE")
        with pytest.raises(EOFError):
            client.read_response()


def test_connection_without_client_certificate_is_refused(server: ServerThread, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            tls = ctx.wrap_socket(sock, server_hostname="localhost")
            sock = tls
            # TLS 1.3 reports the missing certificate on the first read.
            if not tls.recv(100):
                raise EOFError
    finally:
        sock.close()


def test_one_log_line_per_connection(server: ServerThread, pki: Pki) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=pki.client_context())
    conn.authenticate("EXTERNAL", lambda _: b"")
    conn.logout()

    def lines() -> list[str]:
        return [
            r.getMessage() for r in server.handler.records if "imap connection" in r.getMessage()
        ]

    for _ in range(200):
        if lines():
            break
        time.sleep(0.01)
    (line,) = lines()
    assert f"identity={ADDRESS}" in line and "outcome=logout" in line and "fingerprint=" in line
    record = next(r for r in server.handler.records if "imap connection" in r.getMessage())
    assert record.__dict__["outcome"] == "logout"
    assert len(record.__dict__["fingerprint"]) == 64
