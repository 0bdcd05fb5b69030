"""Submission completes messages (RFC 6409 section 8) and traces them (RFC 5321 section 4.4).

Sent with real clients (smtplib, swaks), read back over IMAP by the clerk:
a message lacking Date, Message-ID or From comes back with them; a complete
one comes back byte for byte after the one Received line prepended.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import imaplib
import re
import shutil
import smtplib
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.instance import Instance


def clerk_fetch(inst: Instance, criteria: tuple[str, ...]) -> bytes:
    conn = imaplib.IMAP4_SSL(
        "localhost", inst.port("imaps"), ssl_context=inst.client_context("greffier1"), timeout=30
    )
    try:
        conn.authenticate("EXTERNAL", lambda _: b"")
        assert conn.select("INBOX", readonly=True)[0] == "OK"
        typ, data = conn.uid("SEARCH", *criteria)
        assert typ == "OK"
        (uid,) = data[0].split()
        typ, fetched = conn.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        return bytes(fetched[0][1])
    finally:
        conn.logout()


def split_trace(stored: bytes, sent: bytes) -> email.message.Message:
    """The header lines the gateway prepended to ``sent``, as a message header."""
    assert stored.endswith(sent), stored[:400]
    added = stored[: len(stored) - len(sent)]
    return email.message_from_bytes(added + b"\r\n", policy=email.policy.compat32)


def check_received(received: str, inst: Instance, who: str) -> datetime:
    """The Received line names the identity, its certificate's SHA-256 and the gateway."""
    text = " ".join(received.split())
    found = re.fullmatch(
        r"from (\S+)(?: \(\[[^]]+\]\))?"
        r" \(authenticated by certificate (\S+) sha256 ([0-9a-f]{64})\)"
        r" by (\S+) with (ESMTPSA?); (.+)",
        text,
    )
    assert found is not None, text
    assert found[2] == inst.address(who)
    assert found[3] == fingerprint(inst, who)
    assert found[4] == "localhost"  # the instance's [instance] hostname
    when = email.utils.parsedate_to_datetime(found[6])
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=5)
    return when


def fingerprint(inst: Instance, who: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(inst.cert(who).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def test_incomplete_message_is_completed(instance: Instance) -> None:
    token = uuid.uuid4().hex
    sent = (
        f"To: {instance.dossier['address']}\r\n"
        f"Subject: [{instance.dossier['number']}] sans en-tetes {token}\r\n\r\n"
        "Bonjour.\r\n"
    ).encode()
    with smtplib.SMTP_SSL(
        "localhost", instance.port("smtps"), context=instance.client_context("avocat1"), timeout=10
    ) as s:
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], sent)
    stored = clerk_fetch(instance, ("SUBJECT", token))
    added = split_trace(stored, sent)
    assert list(added.keys()) == ["Received", "Date", "Message-ID", "From"]
    when = check_received(added["Received"], instance, "avocat1")
    assert email.utils.parsedate_to_datetime(added["Date"]) == when
    assert re.fullmatch(r"<[0-9a-f]{32}@localhost>", added["Message-ID"]), added["Message-ID"]
    assert email.utils.parseaddr(added["From"])[1] == instance.address("avocat1")
    # The completed fields are the message's own from now on: IMAP answers with them.
    assert clerk_fetch(instance, ("HEADER", "Message-ID", added["Message-ID"])) == stored


def test_complete_message_only_gains_the_trace(instance: Instance) -> None:
    mid = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    sent = (
        f"From: Camille <{instance.address('avocat1')}>\r\n"
        f"To: {instance.dossier['address']}\r\n"
        f"Subject: [{instance.dossier['number']}] complet\r\n"
        f"Message-ID: {mid}\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n\r\n"
        "Bonjour.\r\n"
    ).encode()
    with smtplib.SMTP_SSL(
        "localhost", instance.port("smtps"), context=instance.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo("cabinet.example")
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], sent)
    stored = clerk_fetch(instance, ("HEADER", "Message-ID", mid))
    added = split_trace(stored, sent)
    assert list(added.keys()) == ["Received"]
    check_received(added["Received"], instance, "avocat1")
    assert " ".join(added["Received"].split()).startswith("from cabinet.example ([127.0.0.1]) ")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_on_submission_without_date(instance: Instance, tmp_path: Path) -> None:
    """swaks on the submission port (STARTTLS, no AUTH: the certificate is the
    identity): the message it sends as written gets Date and Message-ID, its
    From stays."""
    token = uuid.uuid4().hex
    sent = (
        f"From: {instance.address('avocat2')}\r\n"
        f"To: {instance.dossier['address']}\r\n"
        f"Subject: [{instance.dossier['number']}] swaks {token}\r\n\r\n"
        "Bonjour.\r\n"
    ).encode()
    path = tmp_path / "message.eml"
    path.write_bytes(sent[:-2])  # swaks ends the data with its own CRLF
    out = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(instance.port("submission")),
            "--tls",
            "--tls-cert",
            str(instance.cert("avocat2")),
            "--tls-key",
            str(instance.key("avocat2")),
            "--tls-ca-path",
            str(instance.ca),
            "--tls-verify",
            "--tls-sni",
            "localhost",
            "--from",
            instance.address("avocat2"),
            "--to",
            instance.dossier["address"],
            "--data",
            f"@{path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    stored = clerk_fetch(instance, ("SUBJECT", token))
    added = split_trace(stored, sent)
    assert list(added.keys()) == ["Received", "Date", "Message-ID"]
    check_received(added["Received"], instance, "avocat2")
    assert " with ESMTPS; " in " ".join(added["Received"].split())


def test_auth_external_is_traced_as_esmtpsa(instance: Instance) -> None:
    token = uuid.uuid4().hex
    sent = (
        f"From: {instance.address('avocat1')}\r\n"
        f"To: {instance.dossier['address']}\r\n"
        f"Subject: [{instance.dossier['number']}] auth {token}\r\n\r\n"
        "Bonjour.\r\n"
    ).encode()
    with smtplib.SMTP_SSL(
        "localhost", instance.port("smtps"), context=instance.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 235
        s.sendmail(instance.address("avocat1"), [instance.dossier["address"]], sent)
    added = split_trace(clerk_fetch(instance, ("SUBJECT", token)), sent)
    check_received(added["Received"], instance, "avocat1")
    assert " with ESMTPSA; " in " ".join(added["Received"].split())
