"""A development PKI shaped like the real ones the gateway will trust.

The real deployment trusts the bar council's card CA, the Ministry of
Justice's agents CA and the court systems' CA; this module lays out
look-alikes (same subject shapes, extensions and one-level chains) so that
tests, the benchmark and a developer's laptop exercise the same code paths as
production. The certificates themselves come from ``palais.pki.certbuilder``.

Private keys are written unencrypted with mode 0600: this is a throw-away
PKI generated per run or per workstation, never committed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from palais.mailbox.identity import Role, TrustCommunity
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Validity

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
Issuer: TypeAlias = TrustCommunity | Literal["stranger"]
#: Every CA of the development PKI.
CaName: TypeAlias = TrustCommunity | Literal["infrastructure", "stranger"]

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class _CaProfile:
    common_name: str
    organization: str


_CA_PROFILES: Final[dict[str, _CaProfile]] = {
    TrustCommunity.AVOCATS: _CaProfile(
        "AC Avocats - Conseil National des Barreaux (développement)",
        "Conseil National des Barreaux",
    ),
    TrustCommunity.JUSTICE: _CaProfile(
        "AC Ministère de la Justice - Agents (développement)",
        "Ministère de la Justice",
    ),
    TrustCommunity.COURT_SYSTEMS: _CaProfile(
        "AC Juridictions - Systèmes (développement)",
        "Ministère de la Justice",
    ),
    TrustCommunity.ADMIN: _CaProfile(
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

_ALL_CAS: Final[tuple[CaName, ...]] = (*TrustCommunity, INFRASTRUCTURE, STRANGER)

_DEFAULT_ISSUER: Final[dict[Role, TrustCommunity]] = {
    Role.AVOCAT: TrustCommunity.AVOCATS,
    Role.COLLABORATEUR: TrustCommunity.AVOCATS,
    Role.GREFFIER: TrustCommunity.JUSTICE,
    Role.MAGISTRAT: TrustCommunity.JUSTICE,
    Role.COURT_SYSTEM: TrustCommunity.COURT_SYSTEMS,
    Role.ADMIN: TrustCommunity.ADMIN,
}

#: The subject ``title`` each role carries on its card; court systems have
#: none because their certificate names a system, not a person.
DEFAULT_TITLES: Final[dict[Role, str | None]] = {
    Role.AVOCAT: "AVOCAT",
    Role.COLLABORATEUR: "COLLABORATEUR",
    Role.GREFFIER: "GREFFIER",
    Role.MAGISTRAT: "MAGISTRAT",
    Role.COURT_SYSTEM: None,
    Role.ADMIN: "ADMINISTRATEUR",
}

_DEFAULT_ORGANIZATIONS: Final[dict[Role, str]] = {
    Role.AVOCAT: "Barreau de Paris",
    Role.COLLABORATEUR: "Barreau de Paris",
    Role.GREFFIER: "Ministère de la Justice",
    Role.MAGISTRAT: "Ministère de la Justice",
    Role.COURT_SYSTEM: "Tribunal judiciaire de Paris",
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

    def anchor_path(self, group: TrustCommunity) -> Path:
        return self.root / "anchors" / f"{group.value}.pem"

    def anchor_paths(self) -> dict[TrustCommunity, Path]:
        return {group: self.anchor_path(group) for group in TrustCommunity}

    @property
    def stranger_ca_path(self) -> Path:
        # Kept out of anchors/ so that a glob over anchors/*.pem never trusts it.
        return self.root / "untrusted" / "stranger.pem"

    def ca_cert_path(self, ca: CaName) -> Path:
        if ca == INFRASTRUCTURE:
            return self.ca_path
        if ca == STRANGER:
            return self.stranger_ca_path
        return self.anchor_path(TrustCommunity(ca))

    def ca_key_path(self, ca: CaName) -> Path:
        return self.root / "private" / f"{_ca_stem(ca)}.key"

    def crl_path(self, ca: CaName) -> Path:
        return self.root / "crl" / f"{_ca_stem(ca)}.pem"

    def crl_paths(self) -> tuple[Path, ...]:
        """The CRLs of the client-trusted CAs, as the TLS server needs them."""
        return tuple(self.crl_path(group) for group in TrustCommunity)

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

    for ca in _ALL_CAS:
        _create_ca(pki, ca)

    infra = _load_ca(pki, INFRASTRUCTURE)
    server = infra.issue(
        certbuilder.name(
            hostnames[0] if hostnames else "palais",
            organization="Palais (développement)",
            country="FR",
        ),
        profile=certbuilder.SERVER,
        dns_names=hostnames,
        ips=[str(a) for a in addresses],
    )
    server.write(pki.server_cert_path, pki.server_key_path)

    evidence = infra.issue(
        certbuilder.name(
            "Palais - Service de preuve (développement)",
            organization="Palais (développement)",
            country="FR",
        ),
        profile=certbuilder.EVIDENCE,
    )
    evidence.write(pki.evidence_cert_path, pki.evidence_key_path)
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
    (Role.COURT_SYSTEM) get a DNS name (default: the address's domain) and
    serverAuth as well, since they also accept connections.
    """
    cert_path = pki.identity_cert_path(name)
    key_path = pki.identity_key_path(name)
    if cert_path.exists() or key_path.exists():
        raise FileExistsError(f"identity {name!r} already exists in {pki.root}")
    ca = _load_ca(pki, issuer if issuer is not None else _DEFAULT_ISSUER[role])

    mail = address.strip()
    if mail.count("@") != 1 or mail.startswith("@") or mail.endswith("@"):
        raise ValueError(f"not an e-mail address: {address!r}")
    is_system = role is Role.COURT_SYSTEM
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

    validity: Validity | None = None
    if not_before is not None or not_after is not None:
        start = not_before if not_before is not None else certbuilder.now() - certbuilder.BACKDATE
        end = (
            not_after
            if not_after is not None
            else min(certbuilder.now() + certbuilder.LEAF_LIFETIME, ca.cert.not_valid_after_utc)
        )
        validity = Validity(start, end)

    if is_system:
        domains = dns_names if dns_names is not None else (mail.rsplit("@", 1)[1],)
    elif dns_names:
        raise ValueError("only court systems carry DNS names")
    else:
        domains = ()
    issued = ca.issue(
        certbuilder.name_of(attributes),
        profile=certbuilder.role_profile(role),
        emails=[mail],
        dns_names=domains,
        validity=validity,
    )
    issued.write(cert_path, key_path)
    return IssuedIdentity(
        cert_path=cert_path,
        key_path=key_path,
        address=mail.lower(),
        fingerprint=issued.fingerprint,
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
        role=Role.COURT_SYSTEM,
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
        entry = entry.revocation_date(certbuilder.now())
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        entries.append(entry.build())
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    certbuilder.write_crl(pki.crl_path(ca), _load_ca(pki, ca).crl(entries, number=number + 1))
    return pki.crl_path(ca)


# --- internals ------------------------------------------------------------


def _ca_stem(ca: CaName) -> str:
    return ca.value if isinstance(ca, TrustCommunity) else ca


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"identity name {name!r} must be 1-64 characters of letters, digits, '.', '_' "
            "or '-', not starting with a punctuation mark"
        )
    return name


def _create_ca(pki: DevPki, ca: CaName) -> None:
    profile = _CA_PROFILES[_ca_stem(ca)]
    authority = CertificateAuthority.create(
        certbuilder.name(profile.common_name, organization=profile.organization, country="FR")
    )
    authority.write(pki.ca_cert_path(ca), pki.ca_key_path(ca))
    certbuilder.write_crl(pki.crl_path(ca), authority.crl(number=1))


def _load_ca(pki: DevPki, ca: CaName) -> CertificateAuthority:
    return CertificateAuthority.load(pki.ca_cert_path(ca), pki.ca_key_path(ca))


def _issuing_ca(pki: DevPki, cert: x509.Certificate) -> CaName:
    for ca in _ALL_CAS:
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert_path(ca).read_bytes())
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    raise ValueError(f"no CA of {pki.root} issued {cert.subject.rfc4514_string()}")


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
