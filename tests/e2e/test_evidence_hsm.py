"""The evidence key on a PKCS#11 token (SoftHSM2): receipts signed by it, and
no message accepted while it cannot sign (451 4.3.0), accepted again once it is back."""

from __future__ import annotations

import hashlib
import json
import smtplib
import sqlite3
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.instance import Instance, create_instance
from tests.pki.softhsm import SoftHsmToken
from tests.pki.softhsm import softhsm_token as softhsm_token

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/softhsm2-util").exists(), reason="SoftHSM2 is not installed"
)


def _message(inst: Instance) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = inst.address("avocat1")
    msg["To"] = inst.dossier["address"]
    msg["Subject"] = f"[{inst.dossier['number']}] Pièce signée sur HSM"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    msg.set_content("Bonjour")
    return msg


def _send(inst: Instance) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context("avocat1"), timeout=10
    ) as s:
        try:
            s.send_message(_message(inst))
        except smtplib.SMTPDataError as refused:
            error = refused.smtp_error
            return refused.smtp_code, error if isinstance(error, bytes) else error.encode()
        return 250, b""


def test_receipts_are_signed_on_the_token_and_its_absence_stops_acceptance(
    tmp_path: Path, softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = softhsm_token
    monkeypatch.setenv("PALAIS_TEST_HSM_PIN", token.pin)
    inst = create_instance(
        tmp_path / "palais",
        extra_config=(
            "[evidence]\n"
            f'certificate = "{token.certificate}"\n'
            f'pkcs11_module = "{token.module}"\n'
            f'pkcs11_token = "{token.token}"\n'
            f'pkcs11_key_label = "{token.key_label}"\n'
            'pkcs11_pin = "env:PALAIS_TEST_HSM_PIN"\n'
        ),
    )
    inst.start()
    try:
        assert _send(inst) == (250, b"")
        cert = x509.load_pem_x509_certificate(token.certificate.read_bytes())
        token_sha = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        with sqlite3.connect(inst.root / "palais.db") as db:
            (evidence,) = db.execute("SELECT evidence FROM evidence_log").fetchone()
        assert json.loads(evidence)["issuer"]["certificate_sha256"] == token_sha

        # The token goes away (an HSM unplugged): nothing is accepted without evidence.
        hidden = token.token_directory.with_name("away")
        token.token_directory.rename(hidden)
        code, text = _send(inst)
        assert code == 451 and text.startswith(b"4.3.0"), (code, text)
        assert "evidence" in inst.read_log().lower()
        with sqlite3.connect(inst.root / "palais.db") as db:
            assert db.execute(
                "SELECT count(*) FROM message WHERE sender NOT LIKE 'accuses@%'"
            ).fetchone() == (1,)

        # Back in service: accepted again, without a restart.
        hidden.rename(token.token_directory)
        assert _send(inst) == (250, b"")
        with sqlite3.connect(inst.root / "palais.db") as db:
            assert db.execute("SELECT count(*) FROM evidence_log").fetchone() == (2,)

        # The receipt avocat1 reads over IMAP is signed by the token's key:
        # openssl checks it against the token certificate's CA.
        with inst.imap("avocat1") as imap:
            assert imap.select('"Accus&AOk-s de r&AOk-ception"')[0] == "OK"
            _, data = imap.fetch("1", "(BODY.PEEK[])")
        first = data[0]
        assert isinstance(first, tuple)
        receipt = tmp_path / "receipt.eml"
        receipt.write_bytes(first[1])
        ca = tmp_path / "token-ca.pem"
        ca.write_bytes(token.ca.cert.public_bytes(serialization.Encoding.PEM))
        checked = subprocess.run(
            [
                "openssl",
                "smime",
                "-verify",
                "-in",
                str(receipt),
                "-CAfile",
                str(ca),
                "-out",
                "/dev/null",
            ],
            capture_output=True,
        )
        assert checked.returncode == 0, checked.stderr
    finally:
        inst.stop()


@pytest.mark.parametrize("broken", ["pin", "file"])
def test_an_unusable_evidence_key_stops_the_start_with_a_clear_message(
    tmp_path: Path, softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    token = softhsm_token
    if broken == "pin":
        monkeypatch.setenv("PALAIS_TEST_HSM_PIN", token.pin + "0")
        config = (
            "[evidence]\n"
            f'certificate = "{token.certificate}"\n'
            f'pkcs11_module = "{token.module}"\n'
            f'pkcs11_token = "{token.token}"\n'
            'pkcs11_pin = "env:PALAIS_TEST_HSM_PIN"\n'
        )
    else:
        # The token's certificate with the instance's key file: not that key's.
        config = f'[evidence]\ncertificate = "{token.certificate}"\n'
    inst = create_instance(tmp_path / "palais", extra_config=config)
    started = subprocess.run(
        [sys.executable, "-m", "palais", "serve", str(inst.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert "palais serve: cannot start: evidence key:" in started.stderr, started.stderr
    assert "Traceback" not in started.stderr
