"""The one certificate builder: CAs, leaves, CRLs and PEM files.

The development PKI (``palais init``), the tests and the benchmark all build
their certificates here, so that a fix to a profile or to how keys reach the
disk is made once. EC P-256 and SHA-256 everywhere (handshake cost dominates
the reused-connection benchmark); one-level chains: a CA signs leaves and
CRLs.

Private keys are written unencrypted with mode 0600: these are throw-away
certificates generated per run or per workstation, never committed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import Role

__all__ = [
    "BACKDATE",
    "CARD",
    "CA_LIFETIME",
    "CLIENT",
    "EVIDENCE",
    "LEAF_LIFETIME",
    "SERVER",
    "SYSTEM",
    "CertificateAuthority",
    "Issued",
    "Profile",
    "Validity",
    "atomic_write",
    "fingerprint",
    "name",
    "name_of",
    "new_key",
    "now",
    "role_profile",
    "write_certificate",
    "write_crl",
    "write_pem_pair",
]

# Backdating absorbs clock skew between the machine that issues and the one
# that verifies (containers, VMs resumed from sleep).
BACKDATE: Final = timedelta(minutes=5)

#: A CNB card lasts three years; the default for a leaf.
LEAF_LIFETIME: Final = timedelta(days=3 * 365)
#: The default for a CA.
CA_LIFETIME: Final = timedelta(days=3650)

# RFC 9336 id-kp-documentSigning; cryptography has no constant for it yet.
_DOCUMENT_SIGNING: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


def now() -> datetime:
    """The current UTC time at X.509's one-second resolution.

    Dropping microseconds keeps the values we compare identical to the ones
    we encode.
    """
    return datetime.now(UTC).replace(microsecond=0)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(
    common_name: str,
    *,
    organization: str | None = None,
    country: str | None = None,
) -> x509.Name:
    """A subject or issuer name: C, O, CN, in that order, as the real CAs write them."""
    attributes: list[tuple[x509.ObjectIdentifier, str]] = []
    if country is not None:
        attributes.append((NameOID.COUNTRY_NAME, country))
    if organization is not None:
        attributes.append((NameOID.ORGANIZATION_NAME, organization))
    attributes.append((NameOID.COMMON_NAME, common_name))
    return name_of(attributes)


def name_of(attributes: Iterable[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex, as identify() reports it."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True, slots=True)
class Profile:
    """What a leaf certificate may be used for."""

    purposes: tuple[x509.ObjectIdentifier, ...]
    #: Non-repudiation, for a key that signs evidence.
    content_commitment: bool = False


#: A TLS server.
SERVER: Final = Profile((ExtendedKeyUsageOID.SERVER_AUTH,))
#: A TLS client and nothing else.
CLIENT: Final = Profile((ExtendedKeyUsageOID.CLIENT_AUTH,))
#: A person's card: TLS client authentication and S/MIME signing.
CARD: Final = Profile((ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION))
#: A court system, which both connects and accepts connections.
SYSTEM: Final = Profile((ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH))
#: The evidence service's signing key. No TLS usage, so it cannot be
#: repurposed to authenticate a connection; S/MIME because receipts travel as
#: CMS-signed mail, and document signing for verifiers that know RFC 9336.
EVIDENCE: Final = Profile(
    (ExtendedKeyUsageOID.EMAIL_PROTECTION, _DOCUMENT_SIGNING), content_commitment=True
)


def role_profile(role: Role) -> Profile:
    """The profile of the certificate a role's members present."""
    return SYSTEM if role is Role.COURT_SYSTEM else CARD


@dataclass(frozen=True, slots=True)
class Validity:
    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")

    @classmethod
    def lasting(cls, lifetime: timedelta, *, start: datetime | None = None) -> Validity:
        """Valid from ``start`` (default: now, backdated by BACKDATE) for ``lifetime``."""
        begin = start if start is not None else now() - BACKDATE
        return cls(begin, begin + lifetime)

    @classmethod
    def expired(cls, *, ago: timedelta = timedelta(days=1)) -> Validity:
        """Valid for a year that ended ``ago``."""
        end = now() - ago
        return cls(end - timedelta(days=365), end)

    @classmethod
    def not_yet_valid(cls, *, within: timedelta = timedelta(days=1)) -> Validity:
        """Valid for a year that starts ``within`` from now."""
        begin = now() + within
        return cls(begin, begin + timedelta(days=365))


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def write(self, cert_path: Path, key_path: Path) -> None:
        write_pem_pair(cert_path, key_path, self.cert, self.key)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA that issues end-entity certificates and signs CRLs."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls,
        subject: x509.Name,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        validity: Validity | None = None,
        issuer: CertificateAuthority | None = None,
        path_length: int = 0,
        crl_url: str | None = None,
    ) -> CertificateAuthority:
        """A CA: self-signed, or issued by ``issuer`` (an intermediate); it may
        have CAs under it down to ``path_length`` (0: end entities only, as the
        real card CAs' issuing tier); ``crl_url`` names where its CRL is
        published (CRLDistributionPoints).

        The default validity is CA_LIFETIME from now, starting yesterday.
        """
        key = key if key is not None else new_key()
        if validity is None:
            begin = now()
            validity = Validity(begin - timedelta(days=1), begin + CA_LIFETIME)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        authority = (
            issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            if issuer is not None
            else ski
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity.not_before)
            .not_valid_after(validity.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(authority),
                critical=False,
            )
        )
        if crl_url is not None:
            point = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(crl_url)], None, None, None
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        signer = issuer.key if issuer is not None else key
        return cls(builder.sign(signer, hashes.SHA256()), key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path} is not an EC private key")
        return cls(cert, key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        write_pem_pair(cert_path, key_path, self.cert, self.key)

    def issue(
        self,
        subject: x509.Name,
        *,
        profile: Profile,
        emails: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
        validity: Validity | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Issued:
        """An end-entity certificate signed by this CA.

        The default validity is LEAF_LIFETIME from now, backdated, cut at the
        CA's own expiry.
        """
        key = key if key is not None else new_key()
        if validity is None:
            begin = now()
            end = min(begin + LEAF_LIFETIME, self.cert.not_valid_after_utc)
            validity = Validity(begin - BACKDATE, end)
        sans: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
        sans += [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        public_key = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity.not_before)
            .not_valid_after(validity.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # EC keys cannot encipher, so digitalSignature alone covers TLS
        # authentication and S/MIME signing.
        builder = builder.add_extension(
            _key_usage(digital_signature=True, content_commitment=profile.content_commitment),
            critical=True,
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(profile.purposes)), critical=False
        )
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def crl(
        self,
        revoked: Iterable[int | x509.RevokedCertificate] = (),
        *,
        number: int = 1,
        lifetime: timedelta = timedelta(days=365),
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked``: serial numbers, or entries kept as they are.

        Backdated like certificates: a CRL whose thisUpdate is ahead of the
        verifier's clock is "not yet valid" and fails every handshake.
        """
        this_update = now() - BACKDATE
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(this_update)
            .next_update(this_update + BACKDATE + lifetime)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for entry in revoked:
            if isinstance(entry, int):
                entry = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(entry)
                    .revocation_date(this_update)
                    .build()
                )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, hashes.SHA256())

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    cert_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_pem_pair(
    cert_path: Path,
    key_path: Path,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    """The key (PKCS#8, unencrypted, mode 0600) first, then the certificate (0644)."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(Path(key_path), key_pem, 0o600)
    write_certificate(cert_path, cert)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    """A certificate alone (mode 0644): a trust anchor whose key stays in memory."""
    atomic_write(Path(path), cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    atomic_write(Path(path), crl.public_bytes(serialization.Encoding.PEM), 0o644)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half.

    A server may be reading a CRL while the operator revokes. The temporary
    file is created with its final mode so a key is never briefly
    world-readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
