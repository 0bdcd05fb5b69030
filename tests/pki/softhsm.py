"""A SoftHSM2 token per test, in a temporary directory, holding an evidence key.

The key is generated per run, written (mode 0600) only long enough for
``softhsm2-util --import`` to read it, then deleted: after that it exists
only on the token, as an HSM key would. Its certificate is issued by a CA
made for the run with ``palais.pki.certbuilder``.

SoftHSM reads ``SOFTHSM2_CONF`` when the library is initialised, so the
variable is set for the whole test (through ``monkeypatch``, which restores
it). Each token gets a label of its own: a library initialised by an
earlier test still lists that test's tokens, and a shared label could find
the wrong one.

Use the fixture with ``from tests.pki.softhsm import softhsm_token``, or
``make_softhsm_token`` for more than one token in a test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from palais.pki import certbuilder
from palais.pki.certbuilder import EVIDENCE, CertificateAuthority

__all__ = [
    "SOFTHSM_MODULE",
    "SOFTHSM_UTIL",
    "SoftHsmToken",
    "add_softhsm_token",
    "make_softhsm_token",
    "requires_softhsm",
    "softhsm_token",
]

# Debian/Ubuntu ship the module under both names; other systems under the last ones.
_MODULE_CANDIDATES: Final = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

SOFTHSM_UTIL: Final = shutil.which("softhsm2-util")
SOFTHSM_MODULE: Final = next((p for p in _MODULE_CANDIDATES if Path(p).is_file()), None)

requires_softhsm = pytest.mark.skipif(
    SOFTHSM_UTIL is None or SOFTHSM_MODULE is None,
    reason="SoftHSM2 is not installed (apt-get install softhsm2)",
)

_KeyToImport = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class SoftHsmToken:
    """A token initialised for one test, and what opening its evidence key takes."""

    module: str
    token: str
    key_label: str
    pin: str
    so_pin: str
    certificate: Path  # the evidence certificate, PEM
    conf: Path  # the softhsm2.conf that SOFTHSM2_CONF names
    tokendir: Path  # directories.tokendir, shared by the tokens of one conf
    token_directory: Path  # where SoftHSM keeps this token's objects: rename it to "remove" it
    ca: CertificateAuthority  # issued the certificate; for tests that need another

    def import_key(self, key: _KeyToImport, *, label: str, key_id: str) -> None:
        """Put ``key`` on the token as ``label`` (``key_id`` in hex), as an HSM would hold it."""
        _import_key(self, key, label=label, key_id=key_id)

    def issue(self, key: _KeyToImport, path: Path, *, common_name: str = "Palais evidence") -> Path:
        """A certificate by ``ca`` for ``key``'s public key, written to ``path`` (PEM)."""
        cert = _evidence_certificate(self.ca, key, common_name)
        certbuilder.write_certificate(path, cert)
        return path


def make_softhsm_token(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    key_label: str = "evidence",
) -> SoftHsmToken:
    """A token in ``directory`` with an EC P-256 evidence key and its certificate.

    Sets ``SOFTHSM2_CONF`` for the rest of the test through ``monkeypatch``.
    """
    if SOFTHSM_UTIL is None or SOFTHSM_MODULE is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    tokendir = directory / "tokens"
    tokendir.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    ca = CertificateAuthority.create(
        certbuilder.name("Palais test HSM CA", organization="Palais tests")
    )
    return _init_token(conf, tokendir, ca, directory / "evidence.pem", key_label)


def add_softhsm_token(
    beside: SoftHsmToken, certificate: Path, *, key_label: str = "evidence"
) -> SoftHsmToken:
    """Another token of the same conf (so the same library), with a key and certificate."""
    return _init_token(beside.conf, beside.tokendir, beside.ca, certificate, key_label)


def _init_token(
    conf: Path, tokendir: Path, ca: CertificateAuthority, certificate: Path, key_label: str
) -> SoftHsmToken:
    assert SOFTHSM_MODULE is not None
    before = set(tokendir.iterdir())
    # Labels are at most 32 bytes; 8 hex digits are unique enough per run.
    label = f"palais-test-{secrets.token_hex(4)}"
    pin, so_pin = secrets.token_hex(6), secrets.token_hex(6)
    _softhsm_util(
        conf,
        "--init-token",
        "--free",
        "--label",
        label,
        "--pin",
        pin,
        "--so-pin",
        so_pin,
    )
    (token_directory,) = set(tokendir.iterdir()) - before
    token = SoftHsmToken(
        module=SOFTHSM_MODULE,
        token=label,
        key_label=key_label,
        pin=pin,
        so_pin=so_pin,
        certificate=certificate,
        conf=conf,
        tokendir=tokendir,
        token_directory=token_directory,
        ca=ca,
    )
    key = certbuilder.new_key()
    token.import_key(key, label=key_label, key_id="01")
    token.issue(key, token.certificate)
    return token


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    """A SoftHSM2 token of this test's own, with an EC evidence key labelled "evidence"."""
    return make_softhsm_token(tmp_path / "softhsm", monkeypatch)


def _import_key(token: SoftHsmToken, key: _KeyToImport, *, label: str, key_id: str) -> None:
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = token.conf.parent / f".import-{secrets.token_hex(4)}.pem"
    certbuilder.atomic_write(path, pkcs8, 0o600)
    try:
        _softhsm_util(
            token.conf,
            "--import",
            str(path),
            "--token",
            token.token,
            "--label",
            label,
            "--id",
            key_id,
            "--pin",
            token.pin,
        )
    finally:
        path.unlink()


def _evidence_certificate(
    ca: CertificateAuthority, key: _KeyToImport, common_name: str
) -> x509.Certificate:
    subject = certbuilder.name(common_name, organization="Palais tests")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ca.issue(subject, profile=EVIDENCE, key=key).cert
    # certbuilder issues EC keys only (the product's PKI is all P-256); an
    # RSA evidence key is an HSM deployment's choice, so the test builds its
    # certificate itself, with the same profile's usage.
    begin = certbuilder.now() - certbuilder.BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(EVIDENCE.purposes)), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def _softhsm_util(conf: Path, *args: str) -> None:
    assert SOFTHSM_UTIL is not None
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    result = subprocess.run(
        [SOFTHSM_UTIL, *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        # Only the action: the rest of the command line holds the PINs.
        raise RuntimeError(
            f"softhsm2-util {args[0]} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
