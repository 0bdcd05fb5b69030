"""A throw-away PKI for the HTTPS tests, generated per session, EC P-256.

One CA signs the server certificate and three client certificates: an
admin, a lawyer (not admin) and one that the second CRL revokes. Two CRL
files exist for the same CA: an empty one and one that lists the revoked
certificate, so each test picks the revocation state it needs.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import Identity, Role

_BACKDATE = timedelta(minutes=5)
_LIFETIME = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Client:
    cert: Path
    key: Path
    identity: Identity


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    crl_empty: Path
    crl_revoking: Path
    admin: Client
    lawyer: Client
    revoked: Client
    unknown: Client  # trusted chain, but no account behind it


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Palais tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    san: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: list[x509.Certificate],
) -> x509.CertificateRevocationList:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + _LIFETIME)
        .add_extension(x509.CRLNumber(len(revoked) + 1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - _BACKDATE)
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("https-pki")
    now = datetime.now(UTC)
    ca_key = _key()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Palais test CA"))
        .issuer_name(_name("Palais test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_cert(root / "ca.pem", ca_cert)

    server_cert, server_key = _leaf(
        ca_cert,
        ca_key,
        "localhost",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ExtendedKeyUsageOID.SERVER_AUTH,
    )
    _write_cert(root / "server.pem", server_cert)
    _write_key(root / "server.key", server_key)

    clients: dict[str, Client] = {}
    issued: dict[str, x509.Certificate] = {}
    for account_id, (label, role) in enumerate(
        [
            ("admin", Role.ADMIN),
            ("lawyer", Role.AVOCAT),
            ("revoked", Role.ADMIN),
            ("unknown", Role.AVOCAT),
        ],
        start=1,
    ):
        address = f"{label}@palais.test"
        cert, key = _leaf(
            ca_cert,
            ca_key,
            f"{label.title()} Test",
            [x509.RFC822Name(address)],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        cert_path, key_path = root / f"{label}.pem", root / f"{label}.key"
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        identity = Identity(
            account_id=account_id,
            address=address,
            role=role,
            display_name=f"{label.title()} Test",
            fingerprint=fingerprint,
            mailbox_owner=address,
        )
        clients[label] = Client(cert_path, key_path, identity)
        issued[label] = cert

    crl_empty = root / "crl-empty.pem"
    crl_empty.write_bytes(_crl(ca_cert, ca_key, []).public_bytes(serialization.Encoding.PEM))
    crl_revoking = root / "crl-revoking.pem"
    crl_revoking.write_bytes(
        _crl(ca_cert, ca_key, [issued["revoked"]]).public_bytes(serialization.Encoding.PEM)
    )
    return Pki(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        crl_empty=crl_empty,
        crl_revoking=crl_revoking,
        admin=clients["admin"],
        lawyer=clients["lawyer"],
        revoked=clients["revoked"],
        unknown=clients["unknown"],
    )
