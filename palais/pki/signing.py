"""The evidence key: what signs receipts, tree heads and printable receipts.

The key lives in a file or on an HSM (``palais.pki.hsm``); everything that
signs evidence goes through ``EvidenceKey`` and never sees which. A key
that cannot sign raises ``EvidenceUnavailable``: the gateway then refuses
to accept messages (451 4.3.0) rather than accept one without its evidence.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from palais.mailbox.errors import TemporaryFailure


class EvidenceUnavailable(TemporaryFailure):
    """The evidence key cannot sign now; nothing that needs evidence may be accepted."""


class EvidenceKeyError(ValueError):
    """The configured evidence key cannot be used (unreadable, not the certificate's...)."""


class EvidenceKey(Protocol):
    """A private key that signs with SHA-256, and its certificate chain."""

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def chain(self) -> Sequence[x509.Certificate]:
        """Intermediate certificates up to (not including) the trust anchor."""
        ...

    def sign(self, data: bytes) -> bytes:
        """A signature of SHA-256(data): DER ECDSA-Sig-Value for an EC key,
        PKCS#1 v1.5 for RSA. Raises ``EvidenceUnavailable`` if it cannot."""
        ...


@functools.lru_cache(maxsize=64)  # the evidence key's, at every signed tree head
def certificate_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (as identities' fingerprints)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def signature_algorithm(cert: x509.Certificate) -> str:
    """``"ecdsa"`` or ``"rsa"``: how the certificate's key signs."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    raise ValueError(f"evidence keys are EC or RSA, not {type(key).__name__}")


def verify_signature(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` is the certificate key's SHA-256 signature of ``data``."""
    from cryptography.exceptions import InvalidSignature

    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class FileKey:
    """An evidence key read from a PEM file."""

    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: Sequence[x509.Certificate] = ()

    def sign(self, data: bytes) -> bytes:
        try:
            if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
                return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))
            return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        except Exception as error:  # pragma: no cover - a loaded key signs
            raise EvidenceUnavailable(
                "The evidence service cannot sign now, please try again later",
                reason=f"evidence key file failed to sign: {type(error).__name__}",
            ) from error


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer`` is a CA certificate whose key signed ``cert``."""
    from cryptography.exceptions import InvalidSignature

    if cert.issuer != issuer.subject:
        return False
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def valid_at(cert: x509.Certificate, when: datetime) -> bool:
    """True if ``when`` lies within the certificate's validity."""
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order."""
    return x509.load_pem_x509_certificates(path.read_bytes())


def load_file_key(certificate: Path, key: Path) -> FileKey:
    """The key of ``key`` with the certificate (and any chain after it) of ``certificate``."""
    try:
        certs = load_certificates(certificate)
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise EvidenceKeyError(f"cannot read the evidence key or certificate: {error}") from error
    if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise EvidenceKeyError(f"{key}: evidence keys are EC or RSA")
    if private.public_key() != certs[0].public_key():
        raise EvidenceKeyError(f"{key} is not the key of the certificate in {certificate}")
    return FileKey(private, certs[0], tuple(certs[1:]))
