"""SMTP with real clients (smtplib, curl, swaks, raw sockets) against `palais serve`."""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import uuid
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from tests.conftest import TEST_MAX_SIZE
from tests.e2e.instance import Instance


def message(
    inst: Instance, sender: str = "avocat1", subject: str = "test", body: str = "Bonjour"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = inst.address(sender)
    msg["To"] = inst.dossier["address"]
    msg["Subject"] = f"[{inst.dossier['number']}] {subject}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    msg.set_content(body)
    return msg


def smtps(inst: Instance, who: str | None) -> smtplib.SMTP_SSL:
    return smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context(who), timeout=10
    )


def submission(inst: Instance, who: str | None) -> smtplib.SMTP:
    s = smtplib.SMTP("localhost", inst.port("submission"), timeout=10)
    s.ehlo()
    s.starttls(context=inst.client_context(who))
    s.ehlo()
    return s


def test_ehlo_advertises_extensions(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        code, _ = s.ehlo()
        assert code == 250
        for ext in ("enhancedstatuscodes", "pipelining", "size", "8bitmime", "auth"):
            assert s.has_extn(ext), ext
        assert s.esmtp_features["size"] == str(TEST_MAX_SIZE)
        assert s.esmtp_features["auth"].strip() == "EXTERNAL"


def test_plain_submission_advertises_no_auth_before_tls(instance: Instance) -> None:
    with smtplib.SMTP("localhost", instance.port("submission"), timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        assert not s.has_extn("auth")


@pytest.mark.parametrize("listener", ["smtps", "submission"])
def test_lawyer_sends_to_dossier(instance: Instance, listener: str) -> None:
    client = smtps if listener == "smtps" else submission
    with client(instance, "avocat1") as s:
        refused = s.send_message(
            message(instance),
            from_addr=instance.address("avocat1"),
            to_addrs=[instance.dossier["address"]],
        )
        assert refused == {}


def test_reply_to_data_names_the_message(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        assert s.mail(instance.address("avocat1"))[0] == 250
        assert s.rcpt(instance.dossier["address"])[0] == 250
        code, text = s.data(message(instance).as_string())
        assert code == 250
        assert text.startswith(b"2.0.0 Accepted as M")


def test_mail_before_starttls_is_refused(instance: Instance) -> None:
    with smtplib.SMTP("localhost", instance.port("submission"), timeout=10) as s:
        s.ehlo()
        assert s.mail(instance.address("avocat1")) == (
            530,
            b"5.7.0 Must issue a STARTTLS command first",
        )
        assert s.rcpt(instance.dossier["address"])[0] == 530


@pytest.mark.parametrize("who", [None, "stranger", "expired", "revoked"])
def test_bad_certificates_fail_the_handshake_smtps(instance: Instance, who: str | None) -> None:
    refused = (ssl.SSLError, ConnectionResetError, smtplib.SMTPServerDisconnected)
    # TLS 1.3 reports a refused client certificate on the first read.
    with pytest.raises(refused), smtps(instance, who) as s:
        s.ehlo()
        s.mail(instance.address("avocat1"))


@pytest.mark.parametrize("who", [None, "stranger", "expired", "revoked"])
def test_bad_certificates_fail_starttls(instance: Instance, who: str | None) -> None:
    refused = (ssl.SSLError, ConnectionResetError, smtplib.SMTPServerDisconnected)
    with pytest.raises(refused), submission(instance, who) as s:
        s.mail(instance.address("avocat1"))


def test_mail_from_must_be_own_address(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        code, text = s.mail(instance.address("avocat2"))
        assert code == 550
        assert text.startswith(b"5.7.1 ")


def test_unknown_recipient(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        s.mail(instance.address("avocat1"))
        code, text = s.rcpt("nobody@nowhere.palais.test")
        assert (code, text[:6]) == (550, b"5.1.1 ")


def test_size_declared_too_big(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        code, text = s.mail(instance.address("avocat1"), [f"SIZE={TEST_MAX_SIZE + 1}"])
        assert (code, text[:6]) == (552, b"5.3.4 ")


def test_size_enforced_on_data(instance: Instance) -> None:
    big = message(instance, body="x" * 100 + ("y" * 76 + "\n") * (TEST_MAX_SIZE // 77 + 10))
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        s.mail(instance.address("avocat1"))
        s.rcpt(instance.dossier["address"])
        code, text = s.data(big.as_string())
        assert (code, text[:6]) == (552, b"5.3.4 "), text
        # The session goes on after the refusal.
        assert s.noop()[0] == 250


def test_empty_body_refused(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        s.mail(instance.address("avocat1"))
        s.rcpt(instance.dossier["address"])
        code, text = s.data(b"Subject: [2025-0000138] vide\r\nFrom: x@y\r\n\r\n")
        assert (code, text[:6]) == (550, b"5.6.0 ")


def test_auth_external_variants(instance: Instance) -> None:
    me = instance.address("avocat1")
    import base64

    with smtps(instance, "avocat1") as s:
        s.ehlo()
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 235
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 503
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        assert s.docmd("AUTH", "EXTERNAL " + base64.b64encode(me.encode()).decode())[0] == 235
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        assert s.docmd("AUTH", "EXTERNAL")[0] == 334
        assert s.docmd("")[0] == 235
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        other = base64.b64encode(instance.address("avocat2").encode()).decode()
        assert s.docmd("AUTH", "EXTERNAL " + other) == (
            535,
            b"5.7.8 Authorization identity does not match your certificate",
        )
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0u\0p").decode())
        assert (code, text[:6]) == (504, b"5.5.4 ")
        code, _ = s.docmd("AUTH", "LOGIN")
        assert code == 504


def test_auth_before_tls_is_refused(instance: Instance) -> None:
    with smtplib.SMTP("localhost", instance.port("submission"), timeout=10) as s:
        s.ehlo()
        code, text = s.docmd("AUTH", "EXTERNAL =")
        assert (code, text[:7]) == (538, b"5.7.11 ")


def test_pipelining(instance: Instance) -> None:
    """All commands in one write; every reply comes back in order."""
    ctx = instance.client_context("avocat1")
    raw = socket.create_connection(("127.0.0.1", instance.port("smtps")), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        f = tls.makefile("rb")

        def reply() -> list[bytes]:
            lines = []
            while True:
                line = f.readline()
                lines.append(line)
                if line[3:4] != b"-":
                    return lines

        assert reply()[0].startswith(b"220")
        tls.sendall(b"EHLO client\r\n")
        assert reply()[-1].startswith(b"250 ")
        body = message(instance).as_bytes().replace(b"\n", b"\r\n")
        tls.sendall(
            b"MAIL FROM:<" + instance.address("avocat1").encode() + b">\r\n"
            b"RCPT TO:<nobody@nowhere.palais.test>\r\n"
            b"RCPT TO:<" + instance.dossier["address"].encode() + b">\r\n"
            b"DATA\r\n"
        )
        assert reply()[0].startswith(b"250 2.1.0")
        assert reply()[0].startswith(b"550 5.1.1")
        assert reply()[0].startswith(b"250 2.1.5")
        assert reply()[0].startswith(b"354")
        tls.sendall(body + b".\r\nQUIT\r\n")
        assert reply()[0].startswith(b"250 2.0.0")
        assert reply()[0].startswith(b"221")


def test_no_exception_text_leaks(instance: Instance) -> None:
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        code, text = s.docmd("MAIL", "FROM:<\x7f>")
        assert code in (501, 550, 553)
        assert b"Traceback" not in text and b"Error:" not in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_smtps_external(instance: Instance, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eml = tmp_path / "msg.eml"
    eml.write_bytes(message(instance, subject="via curl").as_bytes(policy=SMTP))
    out = subprocess.run(
        instance.curl_send("avocat1", eml, "-v"),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "< 235 2.7.0" in out.stderr
    assert "< 250 2.0.0 Accepted as M" in out.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_without_certificate_fails(instance: Instance, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eml = tmp_path / "msg.eml"
    eml.write_bytes(message(instance).as_bytes(policy=SMTP))
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(instance.ca),
            f"smtps://localhost:{instance.port('smtps')}/client",
            "--mail-from",
            instance.address("avocat1"),
            "--mail-rcpt",
            instance.dossier["address"],
            "-T",
            str(eml),
        ],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )
    assert out.returncode != 0


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
@pytest.mark.parametrize("mode", ["tlsc", "tls"])
def test_swaks(instance: Instance, mode: str) -> None:
    port = instance.port("smtps" if mode == "tlsc" else "submission")
    args = [
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        f"--{mode}",
        "--tls-cert",
        str(instance.cert("avocat2")),
        "--tls-key",
        str(instance.key("avocat2")),
        "--tls-ca-path",
        str(instance.ca),
        "--tls-verify",
        "--from",
        instance.address("avocat2"),
        "--to",
        instance.dossier["address"],
        "--header",
        f"Subject: [{instance.dossier['number']}] via swaks",
        "--body",
        "Bonjour",
        "--tls-sni",
        "localhost",
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"<[~-]  250 2.0.0 Accepted as M", out.stdout), out.stdout


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_wrong_sender(instance: Instance) -> None:
    args = [
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(instance.port("smtps")),
        "--tlsc",
        "--tls-cert",
        str(instance.cert("avocat2")),
        "--tls-key",
        str(instance.key("avocat2")),
        "--from",
        instance.address("avocat1"),
        "--to",
        instance.dossier["address"],
        "--body",
        "x",
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert re.search(r"<[~*]\* 550 5.7.1", out.stdout), out.stdout


def test_court_system_listener(instance: Instance) -> None:
    """Court systems push on their own listener (people's cards: tests/e2e/test_listeners.py)."""
    with smtplib.SMTP("localhost", instance.port("court"), timeout=10) as s:
        s.ehlo()
        s.starttls(context=instance.client_context("court1"))
        s.ehlo()
        refused = s.send_message(
            message(instance, sender="court1", subject="Audience fixée"),
            from_addr=instance.address("court1"),
            to_addrs=[instance.dossier["address"]],
        )
        assert refused == {}


def test_admin_certificate_cannot_submit(instance: Instance) -> None:
    # Operators' certificates only open the HTTPS listener: the handshake fails.
    refused = (ssl.SSLError, ConnectionResetError, smtplib.SMTPServerDisconnected)
    with pytest.raises(refused), smtps(instance, "admin1") as s:
        s.ehlo()
        s.mail(instance.address("admin1"))


def test_each_transaction_starts_a_new_submission(instance: Instance) -> None:
    """What a transaction learnt (its recipients, its dossier) ends with it:
    at RSET and after DATA, refused or not."""
    outsider, dossier = instance.address("avocat3"), instance.dossier["address"]
    with smtps(instance, "avocat1") as s:
        s.ehlo()
        assert s.mail(instance.address("avocat1"))[0] == 250
        assert s.rcpt(outsider)[0] == 250  # no dossier yet to check it against
        number = instance.dossier["number"]
        code, text = s.rcpt(dossier)  # fixes the dossier: the copy takes no part
        assert (code, text) == (
            550,
            f"5.7.1 <{outsider}> takes no part in dossier {number}".encode(),
        )
        code, _ = s.data(message(instance).as_string())  # the dossier named by the subject
        assert code == 550
        assert s.mail(instance.address("avocat1"))[0] == 250
        assert s.rcpt(outsider)[0] == 250
        assert s.rset()[0] == 250
        assert s.mail(instance.address("avocat1"))[0] == 250
        assert s.rcpt(dossier)[0] == 250
        assert s.data(message(instance).as_string())[0] == 250
