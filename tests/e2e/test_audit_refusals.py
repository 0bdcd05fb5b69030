"""Every refusal of every listener in the audit log, once, as one line (real clients).

Certificates an untrusted CA issued, or revoked by the CRL, refused by the
TLS handshake of each listener (SMTPS, submission and the court port after
STARTTLS, IMAPS, HTTPS) with openssl s_client and Python's ssl; the SMTP
front-end's own refusals (MAIL before STARTTLS, a SASL mechanism other than
EXTERNAL, a message over the size limit, too many recipients); HTTPS
requests without a certificate or from a role that may not; connections
beyond a cap.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from palais.storage.audit import query
from palais.storage.engine import make_engine
from tests.e2e.instance import Instance, create_instance

REFUSED = (ssl.SSLError, ConnectionError, smtplib.SMTPException, EOFError, OSError)
MAX_SIZE = 4096
MAX_RECIPIENTS = 2
PER_ADDRESS = 12


def audit(inst: Instance, *args: str) -> list[dict[str, Any]]:
    """The audit log as ``palais admin audit --json`` exports it (read in-process
    while polling, ``palais admin`` itself in ``test_the_export_is_the_same``)."""
    engine = make_engine(f"sqlite:///{inst.root / 'palais.db'}", writer=False)
    try:
        return [json.loads(json.dumps(e.as_json())) for e in query(engine)]
    finally:
        engine.dispose()


def admin_audit(inst: Instance, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "palais", "admin", "audit", "--json", "-d", str(inst.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def last_id(inst: Instance) -> int:
    return max((e["id"] for e in audit(inst)), default=0)


def new_events(inst: Instance, since: int, expected: int) -> list[dict[str, Any]]:
    """The events after ``since`` once ``expected`` have landed, and a moment for an extra one."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [e for e in audit(inst) if e["id"] > since]
        if len(found) >= expected:
            break
        time.sleep(0.3)
    time.sleep(1.0)  # the queue is written in batches: a second event would be in by now
    return [e for e in audit(inst) if e["id"] > since]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = create_instance(
        tmp_path_factory.mktemp("audit-refusals") / "instance",
        extra_config=(
            f"[smtp]\nmax_message_size = {MAX_SIZE}\nmax_recipients = {MAX_RECIPIENTS}\n\n"
            f"[limits]\nmax_connections_per_address = {PER_ADDRESS}\n"
        ),
    )
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def openssl_refused(inst: Instance, listener: str, who: str) -> None:
    """openssl s_client with ``who``'s card against ``listener``: the handshake fails."""
    args = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{inst.port(listener)}",
        "-CAfile",
        str(inst.ca),
        "-cert",
        str(inst.cert(who)),
        "-key",
        str(inst.key(who)),
        "-verify_return_error",
        # Wait for the server: with TLS 1.3 it judges the client's card after
        # the client thinks the handshake done, and answers with an alert.
        "-ign_eof",
    ]
    if listener in ("submission", "court"):
        args += ["-starttls", "smtp"]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    # An alert (unknown CA, revoked), or after STARTTLS the connection closed.
    assert done.returncode != 0, done.stderr
    assert b"alert" in done.stderr or b"eof" in done.stderr, done.stderr


def python_refused(inst: Instance, listener: str, who: str) -> None:
    ctx = inst.client_context(who)
    with pytest.raises(REFUSED):
        if listener == "smtps":
            with smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=ctx, timeout=10) as s:
                s.noop()
        elif listener in ("submission", "court"):
            with smtplib.SMTP("localhost", inst.port(listener), timeout=10) as s:
                s.starttls(context=ctx)
                s.noop()
        else:
            sock = socket.create_connection(("127.0.0.1", inst.port(listener)), timeout=10)
            try:
                with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                    sock = tls
                    if listener == "https":
                        tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    if not tls.recv(100):
                        raise ConnectionError("closed")
            finally:
                sock.close()


LISTENERS = ["smtps", "submission", "court", "imaps", "https"]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize(
    ("who", "client"),
    [("stranger", "openssl"), ("revoked", "openssl"), ("stranger", "ssl"), ("revoked", "ssl")],
)
def test_a_refused_certificate_is_one_audit_line(
    gateway: Instance, listener: str, who: str, client: str
) -> None:
    before = last_id(gateway)
    if client == "openssl":
        openssl_refused(gateway, listener, who)
    else:
        python_refused(gateway, listener, who)
    [event] = new_events(gateway, before, 1)
    assert event["action"] == "connection-refused"
    assert event["listener"] == listener
    assert event["actor"] == "gateway"
    assert event["peer"].startswith("127.0.0.1:")
    assert event["reason"] and "Traceback" not in event["reason"]
    assert "\n" not in event["reason"]


def smtp_events(gateway: Instance, before: int, count: int = 1) -> list[dict[str, Any]]:
    return [e for e in new_events(gateway, before, count) if e["action"] == "command-refused"]


def test_mail_before_starttls_is_audited(gateway: Instance) -> None:
    before = last_id(gateway)
    with smtplib.SMTP("localhost", gateway.port("submission"), timeout=10) as s:
        s.ehlo()
        code, _ = s.mail(gateway.address("avocat1"))
        assert code == 530
    [event] = smtp_events(gateway, before)
    assert event["listener"] == "submission" and event["subject"] is None
    assert event["detail"] == {"command": "MAIL", "reply": "530"}
    assert event["reason"].startswith("530 5.7.0")


def test_a_password_mechanism_is_audited(gateway: Instance) -> None:
    before = last_id(gateway)
    with smtplib.SMTP_SSL(
        "localhost", gateway.port("smtps"), context=gateway.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        code, _ = s.docmd("AUTH", "PLAIN AGF2b2NhdAB4")
        assert code == 504
    [event] = smtp_events(gateway, before)
    assert event["subject"] == gateway.address("avocat1")
    assert event["detail"] == {"command": "AUTH", "reply": "504"}
    assert "AGF2" not in json.dumps(event)  # never the client's words


def test_a_message_over_the_size_limit_and_too_many_recipients_are_audited(
    gateway: Instance,
) -> None:
    before = last_id(gateway)
    me = gateway.address("avocat1")
    with smtplib.SMTP_SSL(
        "localhost", gateway.port("smtps"), context=gateway.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        assert s.mail(me)[0] == 250
        dossier = gateway.dossier["address"]
        for _ in range(MAX_RECIPIENTS):
            assert s.rcpt(dossier)[0] == 250
        assert s.rcpt(dossier)[0] == 452
        code, _ = s.data(
            f"From: {me}\r\nSubject: [{gateway.dossier['number']}] gros\r\n\r\n".encode()
            + b"x" * (MAX_SIZE * 2)
        )
        assert code == 552
    events = smtp_events(gateway, before, 2)
    assert [(e["detail"]["command"], e["detail"]["reply"]) for e in events] == [
        ("RCPT", "452"),
        ("DATA", "552"),
    ]
    assert all(e["subject"] == me for e in events)


def test_https_refusals_are_audited(gateway: Instance) -> None:
    before = last_id(gateway)
    assert gateway.curl_https("/metrics", "avocat1").stdout.endswith("\n403")
    assert gateway.curl_https("/metrics").stdout.endswith("\n401")
    events = smtp_events(gateway, before, 2)
    by_reply = {e["detail"]["reply"]: e for e in events}
    assert sorted(by_reply) == ["401", "403"]
    assert by_reply["403"]["subject"] == gateway.address("avocat1")
    assert by_reply["403"]["detail"]["command"] == "GET /metrics"
    assert by_reply["401"]["subject"] is None and by_reply["401"]["listener"] == "https"


def test_connections_beyond_a_cap_are_audited_without_flooding(gateway: Instance) -> None:
    before = last_id(gateway)
    held: list[socket.socket] = []
    try:
        for _ in range(PER_ADDRESS):
            held.append(socket.create_connection(("127.0.0.1", gateway.port("submission"))))
        time.sleep(0.5)  # all admitted
        for _ in range(20):  # a burst beyond the cap: refused, recorded at most once a second
            with socket.create_connection(("127.0.0.1", gateway.port("submission"))) as extra:
                extra.settimeout(10)
                assert extra.recv(100).startswith(b"421 4.7.0")
    finally:
        for sock in held:
            sock.close()
    events = [e for e in new_events(gateway, before, 1) if e["action"] == "connection-refused"]
    assert 1 <= len(events) <= 5
    first = events[0]
    assert first["listener"] == "submission"
    assert first["detail"]["outcome"] == "limit-connections_per_address"
    assert first["reason"] == "limit reached: connections_per_address"
    recorded = len(events) + sum(e["detail"]["unrecorded_before"] for e in events[1:])
    assert recorded <= 20


def test_the_export_is_the_same(gateway: Instance) -> None:
    exported = admin_audit(gateway, "--action", "connection-refused")
    assert exported == [e for e in audit(gateway) if e["action"] == "connection-refused"]
    assert {e["listener"] for e in exported} >= set(LISTENERS)


def test_aiosmtpd_own_refusals_are_audited_without_the_client_s_words(gateway: Instance) -> None:
    before = last_id(gateway)
    with smtplib.SMTP_SSL(
        "localhost", gateway.port("smtps"), context=gateway.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        assert s.docmd("XSECRETWORD")[0] == 500  # unknown
        assert s.docmd("RCPT", f"TO:<{gateway.dossier['address']}>")[0] == 503  # before MAIL
        assert s.docmd("MAIL", "FROM:")[0] == 501  # no address
    events = smtp_events(gateway, before, 3)
    assert [e["detail"]["reply"] for e in events] == ["500", "503", "501"]
    assert all(e["subject"] == gateway.address("avocat1") for e in events)
    assert "XSECRETWORD" not in json.dumps(events)
    assert events[1]["reason"] == "503 5.5.1 Bad sequence of commands"
