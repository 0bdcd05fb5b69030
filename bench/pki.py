"""Per-run PKI for the peer (Postfix + Dovecot): EC P-256 CA, server and client certs.

Everything is generated fresh for each run with the ``cryptography`` library and
written into the run's temporary directory; nothing is reused between runs.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o640)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Palais bench"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


class BenchPKI:
    """A throw-away CA with helpers to issue server and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
        self.ca_key = _key()
        self.ca_name = _name("Palais bench CA")
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(self.ca_name)
            .issuer_name(self.ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + _dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        # An (empty) CRL: Dovecot 2.3 defaults to ssl_require_crl = yes, and a
        # revocation check is part of what Palais does too, so give it one.
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca_name)
            .last_update(self._now)
            .next_update(self._now + _dt.timedelta(days=2))
            .sign(self.ca_key, hashes.SHA256())
        )
        self.crl_file = self.dir / "ca.crl.pem"
        self.crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        self.ca_with_crl_file = self.dir / "ca+crl.pem"
        self.ca_with_crl_file.write_bytes(self.ca_file.read_bytes() + self.crl_file.read_bytes())

    def _issue(self, cn: str, *, server: bool, stem: str, email: str | None = None) -> CertFiles:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(cn),
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        elif email:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        files = CertFiles(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files.key)
        return files

    def server(self, hostname: str = "localhost", stem: str = "server") -> CertFiles:
        return self._issue(hostname, server=True, stem=stem)

    def client(
        self, common_name: str, email: str | None = None, stem: str | None = None
    ) -> CertFiles:
        return self._issue(common_name, server=False, stem=stem or common_name, email=email)
