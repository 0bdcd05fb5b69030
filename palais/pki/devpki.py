"""A development PKI shaped like the real ones the gateway will trust.

The real deployment trusts the bar council's card CA, the Ministry of
Justice's agents CA and the court systems' CA; this module builds look-alikes
(same subject shapes, extensions and one-level chains) so that tests, the
benchmark and a developer's laptop exercise the same code paths as
production. EC P-256 everywhere because handshake cost dominates the
reused-connection benchmark.

Private keys are written unencrypted with mode 0600: this is a throw-away
PKI generated per run or per workstation, never committed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import AnchorGroup, Role

__all__ = [
    "CaName",
    "DevPki",
    "IssuedIdentity",
    "Issuer",
    "create_dev_pki",
    "issue_identity",
    "issue_sample_identities",
    "load_dev_pki",
    "revoke",
]

STRANGER: Final = "stranger"
INFRASTRUCTURE: Final = "infrastructure"

#: A CA that may issue client identities: one of the trusted communities, or
#: the stranger CA that exists only so tests can present an untrusted chain.
Issuer: TypeAlias = AnchorGroup | Literal["stranger"]
#: Every CA of the development PKI.
CaName: TypeAlias = AnchorGroup | Literal["infrastructure", "stranger"]

# RFC 9336 id-kp-documentSigning; cryptography has no constant for it yet.
_DOCUMENT_SIGNING: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")

_CA_LIFETIME: Final = timedelta(days=3650)
_LEAF_LIFETIME: Final = timedelta(days=3 * 365)  # a CNB card lasts three years
_CRL_LIFETIME: Final = timedelta(days=365)
# Backdating absorbs clock skew between the machine that issues and the one
# that verifies (containers, VMs resumed from sleep).
_BACKDATE: Final = timedelta(minutes=5)

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class _CaProfile:
    common_name: str
    organization: str


_CA_PROFILES: Final[dict[str, _CaProfile]] = {
    AnchorGroup.AVOCATS: _CaProfile(
        "AC Avocats - Conseil National des Barreaux (développement)",
        "Conseil National des Barreaux",
    ),
    AnchorGroup.JUSTICE: _CaProfile(
        "AC Ministère de la Justice - Agents (développement)",
        "Ministère de la Justice",
    ),
    AnchorGroup.JURIDICTIONS: _CaProfile(
        "AC Juridictions - Systèmes (développement)",
        "Ministère de la Justice",
    ),
    AnchorGroup.ADMIN: _CaProfile(
        "AC Palais - Administration (développement)",
        "Palais",
    ),
    INFRASTRUCTURE: _CaProfile(
        "AC Palais - Infrastructure (développement)",
        "Palais",
    ),
    STRANGER: _CaProfile(
        "AC Inconnue - Hors confiance (développement)",
        "Autorité étrangère",
    ),
}

_ALL_CAS: Final[tuple[CaName, ...]] = (*AnchorGroup, INFRASTRUCTURE, STRANGER)

_DEFAULT_ISSUER: Final[dict[Role, AnchorGroup]] = {
    Role.AVOCAT: AnchorGroup.AVOCATS,
    Role.COLLABORATEUR: AnchorGroup.AVOCATS,
    Role.GREFFIER: AnchorGroup.JUSTICE,
    Role.MAGISTRAT: AnchorGroup.JUSTICE,
    Role.JURIDICTION: AnchorGroup.JURIDICTIONS,
    Role.ADMIN: AnchorGroup.ADMIN,
}

#: The subject ``title`` each role carries on its card; court systems have
#: none because their certificate names a system, not a person.
DEFAULT_TITLES: Final[dict[Role, str | None]] = {
    Role.AVOCAT: "AVOCAT",
    Role.COLLABORATEUR: "COLLABORATEUR",
    Role.GREFFIER: "GREFFIER",
    Role.MAGISTRAT: "MAGISTRAT",
    Role.JURIDICTION: None,
    Role.ADMIN: "ADMINISTRATEUR",
}

_DEFAULT_ORGANIZATIONS: Final[dict[Role, str]] = {
    Role.AVOCAT: "Barreau de Paris",
    Role.COLLABORATEUR: "Barreau de Paris",
    Role.GREFFIER: "Ministère de la Justice",
    Role.MAGISTRAT: "Ministère de la Justice",
    Role.JURIDICTION: "Tribunal judiciaire de Paris",
    Role.ADMIN: "Palais",
}


@dataclass(frozen=True, slots=True)
class DevPki:
    """Where each file of a development PKI lives under ``root``."""

    root: Path

    @property
    def ca_path(self) -> Path:
        """What clients trust for the gateway's server certificate."""
        return self.root / "ca.pem"

    def anchor_path(self, group: AnchorGroup) -> Path:
        return self.root / "anchors" / f"{group.value}.pem"

    def anchor_paths(self) -> dict[AnchorGroup, Path]:
        return {group: self.anchor_path(group) for group in AnchorGroup}

    @property
    def stranger_ca_path(self) -> Path:
        # Kept out of anchors/ so that a glob over anchors/*.pem never trusts it.
        return self.root / "untrusted" / "stranger.pem"

    def ca_cert_path(self, ca: CaName) -> Path:
        if ca == INFRASTRUCTURE:
            return self.ca_path
        if ca == STRANGER:
            return self.stranger_ca_path
        return self.anchor_path(AnchorGroup(ca))

    def ca_key_path(self, ca: CaName) -> Path:
        return self.root / "private" / f"{_ca_stem(ca)}.key"

    def crl_path(self, ca: CaName) -> Path:
        return self.root / "crl" / f"{_ca_stem(ca)}.pem"

    def crl_paths(self) -> tuple[Path, ...]:
        """The CRLs of the client-trusted CAs, as the TLS server needs them."""
        return tuple(self.crl_path(group) for group in AnchorGroup)

    @property
    def server_cert_path(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.root / "server.key"

    @property
    def evidence_cert_path(self) -> Path:
        return self.root / "evidence.pem"

    @property
    def evidence_key_path(self) -> Path:
        return self.root / "evidence.key"

    def identity_cert_path(self, name: str) -> Path:
        return self.root / "identities" / f"{_check_name(name)}.pem"

    def identity_key_path(self, name: str) -> Path:
        return self.root / "identities" / f"{_check_name(name)}.key"


@dataclass(frozen=True, slots=True)
class IssuedIdentity:
    cert_path: Path
    key_path: Path
    address: str  # lower-cased, as identify() will report it
    fingerprint: str  # SHA-256 of the DER certificate, lower-case hex


def create_dev_pki(
    root: Path,
    *,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
) -> DevPki:
    """Generate every CA, CRL, the server and evidence certificates under root.

    Refuses to overwrite an existing PKI: regenerating CAs silently would
    orphan every identity already handed out.
    """
    pki = DevPki(Path(root))
    if pki.ca_path.exists():
        raise FileExistsError(f"a development PKI already exists in {pki.root}")
    addresses = [ipaddress.ip_address(ip) for ip in ips]
    if not hostnames and not addresses:
        raise ValueError("the server certificate needs at least one name")

    for directory, mode in (
        (pki.root, 0o755),
        (pki.root / "anchors", 0o755),
        (pki.root / "crl", 0o755),
        (pki.root / "untrusted", 0o755),
        (pki.root / "identities", 0o700),
        (pki.root / "private", 0o700),
    ):
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, mode)

    now = _now()
    for ca in _ALL_CAS:
        _create_ca(pki, ca, now)

    infra_cert, infra_key = _load_ca(pki, INFRASTRUCTURE)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(a) for a in addresses]
    server = _leaf_builder(
        _name(
            [
                (NameOID.COUNTRY_NAME, "FR"),
                (NameOID.ORGANIZATION_NAME, "Palais (développement)"),
                (NameOID.COMMON_NAME, hostnames[0] if hostnames else "palais"),
            ]
        ),
        server_key.public_key(),
        infra_cert,
        now - _BACKDATE,
        now + _LEAF_LIFETIME,
    )
    server = server.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    server = server.add_extension(_ku(digital_signature=True), critical=True)
    server = server.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    )
    _write_pair(
        pki.server_cert_path,
        pki.server_key_path,
        server.sign(infra_key, hashes.SHA256()),
        server_key,
    )

    evidence_key = ec.generate_private_key(ec.SECP256R1())
    evidence = _leaf_builder(
        _name(
            [
                (NameOID.COUNTRY_NAME, "FR"),
                (NameOID.ORGANIZATION_NAME, "Palais (développement)"),
                (NameOID.COMMON_NAME, "Palais - Service de preuve (développement)"),
            ]
        ),
        evidence_key.public_key(),
        infra_cert,
        now - _BACKDATE,
        now + _LEAF_LIFETIME,
    )
    evidence = evidence.add_extension(
        _ku(digital_signature=True, content_commitment=True), critical=True
    )
    # No TLS usage, so the evidence key cannot be repurposed to authenticate a
    # connection; S/MIME because receipts travel as CMS-signed mail, and
    # document signing for verifiers that know RFC 9336.
    evidence = evidence.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, _DOCUMENT_SIGNING]),
        critical=False,
    )
    _write_pair(
        pki.evidence_cert_path,
        pki.evidence_key_path,
        evidence.sign(infra_key, hashes.SHA256()),
        evidence_key,
    )
    return pki


def load_dev_pki(root: Path) -> DevPki:
    """Reopen a PKI made by create_dev_pki, checking that its files are there."""
    pki = DevPki(Path(root))
    required = [
        pki.server_cert_path,
        pki.server_key_path,
        pki.evidence_cert_path,
        pki.evidence_key_path,
    ]
    for ca in _ALL_CAS:
        required += [pki.ca_cert_path(ca), pki.ca_key_path(ca), pki.crl_path(ca)]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{pki.root} is not a complete development PKI; missing: {', '.join(missing)}"
        )
    return pki


def issue_identity(
    pki: DevPki,
    name: str,
    *,
    role: Role,
    address: str,
    given_name: str | None = None,
    surname: str | None = None,
    serial_number: str | None = None,
    common_name: str | None = None,
    organization: str | None = None,
    title: str | None = None,
    dns_names: Sequence[str] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    issuer: Issuer | None = None,
) -> IssuedIdentity:
    """Issue a card-style (person) or system (court) certificate.

    ``issuer`` defaults to the community CA for ``role``; any issuer may be
    forced so that tests can build mis-issued certificates. ``title`` defaults
    to the role's card title; pass ``""`` to leave it out. Court systems
    (Role.JURIDICTION) get a DNS name (default: the address's domain) and
    serverAuth as well, since they also accept connections.
    """
    cert_path = pki.identity_cert_path(name)
    key_path = pki.identity_key_path(name)
    if cert_path.exists() or key_path.exists():
        raise FileExistsError(f"identity {name!r} already exists in {pki.root}")
    ca: Issuer = issuer if issuer is not None else _DEFAULT_ISSUER[role]
    ca_cert, ca_key = _load_ca(pki, ca)

    mail = address.strip()
    if mail.count("@") != 1 or mail.startswith("@") or mail.endswith("@"):
        raise ValueError(f"not an e-mail address: {address!r}")
    is_system = role is Role.JURIDICTION
    if common_name is None:
        if is_system:
            common_name = name
        elif given_name and surname:
            # Cards print the surname in capitals: "Camille DUPONT".
            common_name = f"{given_name} {surname.upper()}"
        else:
            raise ValueError("a person certificate needs given_name and surname")
    card_title = DEFAULT_TITLES[role] if title is None else (title or None)

    attributes: list[tuple[x509.ObjectIdentifier, str]] = [
        (NameOID.COUNTRY_NAME, "FR"),
        (NameOID.ORGANIZATION_NAME, organization or _DEFAULT_ORGANIZATIONS[role]),
    ]
    if card_title:
        attributes.append((NameOID.TITLE, card_title))
    if surname:
        attributes.append((NameOID.SURNAME, surname.upper()))
    if given_name:
        attributes.append((NameOID.GIVEN_NAME, given_name))
    if serial_number:
        attributes.append((NameOID.SERIAL_NUMBER, serial_number))
    attributes.append((NameOID.COMMON_NAME, common_name))

    now = _now()
    start = not_before if not_before is not None else now - _BACKDATE
    end = (
        not_after
        if not_after is not None
        else min(now + _LEAF_LIFETIME, ca_cert.not_valid_after_utc)
    )
    if end <= start:
        raise ValueError("not_after must be later than not_before")

    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(_name(attributes), key.public_key(), ca_cert, start, end)
    sans: list[x509.GeneralName] = [x509.RFC822Name(mail)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if is_system:
        domains = dns_names if dns_names is not None else (mail.rsplit("@", 1)[1],)
        sans += [x509.DNSName(d) for d in domains]
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    else:
        if dns_names:
            raise ValueError("only court systems carry DNS names")
        usages.append(ExtendedKeyUsageOID.EMAIL_PROTECTION)
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    # EC keys cannot encipher, so digitalSignature alone covers both TLS
    # client authentication and S/MIME signing.
    builder = builder.add_extension(_ku(digital_signature=True), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())

    _write_pair(cert_path, key_path, cert, key)
    return IssuedIdentity(
        cert_path=cert_path,
        key_path=key_path,
        address=mail.lower(),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def issue_sample_identities(pki: DevPki) -> dict[str, IssuedIdentity]:
    """One identity per role plus an untrusted one, for demos and benchmarks."""
    samples: dict[str, IssuedIdentity] = {}
    samples["avocat"] = issue_identity(
        pki,
        "avocat",
        role=Role.AVOCAT,
        given_name="Camille",
        surname="Dupont",
        address="camille.dupont@avocat-conseil.fr",
        serial_number="CNB-75-012345",
    )
    samples["collaborateur"] = issue_identity(
        pki,
        "collaborateur",
        role=Role.COLLABORATEUR,
        given_name="Lucas",
        surname="Martin",
        address="lucas.martin@avocat-conseil.fr",
        serial_number="CNB-75-054321",
    )
    samples["greffier"] = issue_identity(
        pki,
        "greffier",
        role=Role.GREFFIER,
        given_name="Nadia",
        surname="Bernard",
        address="nadia.bernard@justice.fr",
        serial_number="MJ-A-104233",
    )
    samples["magistrat"] = issue_identity(
        pki,
        "magistrat",
        role=Role.MAGISTRAT,
        given_name="Paul",
        surname="Lefèvre",
        address="paul.lefevre@justice.fr",
        serial_number="MJ-M-009871",
    )
    samples["juridiction"] = issue_identity(
        pki,
        "juridiction",
        role=Role.JURIDICTION,
        common_name="Portalis TJ Paris",
        organization="Tribunal judiciaire de Paris",
        address="portalis@tj-paris.justice.fr",
    )
    samples["admin"] = issue_identity(
        pki,
        "admin",
        role=Role.ADMIN,
        given_name="Inès",
        surname="Moreau",
        address="ines.moreau@palais.example",
        serial_number="PAL-ADM-0001",
    )
    samples["stranger"] = issue_identity(
        pki,
        "stranger",
        role=Role.AVOCAT,
        given_name="Eve",
        surname="Intrus",
        address="eve@intrus.example",
        serial_number="CNB-99-000000",
        issuer=STRANGER,
    )
    return samples


def revoke(
    pki: DevPki,
    cert_path: Path,
    *,
    reason: x509.ReasonFlags | None = None,
) -> Path:
    """Add a certificate to its CA's CRL, rewrite the CRL, return its path.

    Revoking an already revoked certificate leaves its entry as it was but
    still publishes a fresh CRL.
    """
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    ca = _issuing_ca(pki, cert)
    crl = x509.load_pem_x509_crl(pki.crl_path(ca).read_bytes())
    entries = list(_existing_entries(crl))
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None:
        entry = x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
        entry = entry.revocation_date(_now())
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        entries.append(entry.build())
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    _write_crl(pki, ca, entries, number + 1)
    return pki.crl_path(ca)


# --- internals ------------------------------------------------------------


def _now() -> datetime:
    # X.509 times have one-second resolution; dropping microseconds keeps the
    # values we compare identical to the ones we encode.
    return datetime.now(UTC).replace(microsecond=0)


def _ca_stem(ca: CaName) -> str:
    return ca.value if isinstance(ca, AnchorGroup) else ca


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"identity name {name!r} must be 1-64 characters of letters, digits, '.', '_' "
            "or '-', not starting with a punctuation mark"
        )
    return name


def _name(attributes: Iterable[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _ku(
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


def _create_ca(pki: DevPki, ca: CaName, now: datetime) -> None:
    profile = _CA_PROFILES[_ca_stem(ca)]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(
        [
            (NameOID.COUNTRY_NAME, "FR"),
            (NameOID.ORGANIZATION_NAME, profile.organization),
            (NameOID.COMMON_NAME, profile.common_name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _CA_LIFETIME)
        # pathlen 0: these CAs issue end entities only, as the real card CAs'
        # issuing tier does; an intermediate under them would be refused.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ku(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    _write_pair(pki.ca_cert_path(ca), pki.ca_key_path(ca), cert, key)
    _write_crl(pki, ca, [], 1)


def _load_ca(pki: DevPki, ca: CaName) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert_path(ca).read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key_path(ca).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key_path(ca)} is not an EC private key")
    return cert, key


def _issuing_ca(pki: DevPki, cert: x509.Certificate) -> CaName:
    for ca in _ALL_CAS:
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert_path(ca).read_bytes())
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    raise ValueError(f"no CA of {pki.root} issued {cert.subject.rfc4514_string()}")


def _leaf_builder(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )


def _existing_entries(
    crl: x509.CertificateRevocationList,
) -> Iterable[x509.RevokedCertificate]:
    # Rebuilt through the builder so that entries parsed from disk and new
    # ones go through the same encoder.
    for revoked in crl:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revoked.serial_number)
            .revocation_date(revoked.revocation_date_utc)
        )
        for extension in revoked.extensions:
            entry = entry.add_extension(extension.value, critical=extension.critical)
        yield entry.build()


def _write_crl(
    pki: DevPki,
    ca: CaName,
    entries: Sequence[x509.RevokedCertificate],
    number: int,
) -> None:
    ca_cert, ca_key = _load_ca(pki, ca)
    # Backdated like certificates: a CRL whose thisUpdate is ahead of the
    # verifier's clock is "not yet valid" and fails every handshake.
    this_update = _now() - _BACKDATE
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(this_update + _BACKDATE + _CRL_LIFETIME)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    _atomic_write(pki.crl_path(ca), crl.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_pair(
    cert_path: Path,
    key_path: Path,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(key_path, key_pem, 0o600)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    # A server may be reading a CRL while the operator revokes: readers must
    # see the old file or the new one, never half of it. The temporary file
    # is created with its final mode so a key is never briefly world-readable.
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
