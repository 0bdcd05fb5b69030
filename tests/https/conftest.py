"""A throw-away PKI for the HTTPS tests, generated per session, EC P-256.

One CA signs the server certificate and four client certificates: an
admin, a lawyer (not admin), one that the second CRL revokes and one with no
account behind it. Two CRL
files exist for the same CA: an empty one and one that lists the revoked
certificate, so each test picks the revocation state it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from palais.mailbox.identity import Identity, Role
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Validity

_LIFETIME = timedelta(days=2)
_ORGANIZATION = "Palais tests"


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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("https-pki")
    ca = CertificateAuthority.create(
        certbuilder.name("Palais test CA", organization=_ORGANIZATION),
        validity=Validity.lasting(_LIFETIME),
    )
    certbuilder.write_certificate(root / "ca.pem", ca.cert)
    ca.issue(
        certbuilder.name("localhost", organization=_ORGANIZATION),
        profile=certbuilder.SERVER,
        dns_names=["localhost"],
        ips=["127.0.0.1"],
        validity=Validity.lasting(_LIFETIME),
    ).write(root / "server.pem", root / "server.key")

    clients: dict[str, Client] = {}
    serials: dict[str, int] = {}
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
        issued = ca.issue(
            certbuilder.name(f"{label.title()} Test", organization=_ORGANIZATION),
            profile=certbuilder.CLIENT,
            emails=[address],
            validity=Validity.lasting(_LIFETIME),
        )
        cert_path, key_path = root / f"{label}.pem", root / f"{label}.key"
        issued.write(cert_path, key_path)
        identity = Identity(
            account_id=account_id,
            address=address,
            role=role,
            display_name=f"{label.title()} Test",
            fingerprint=issued.fingerprint,
            mailbox_owner=address,
        )
        clients[label] = Client(cert_path, key_path, identity)
        serials[label] = issued.serial

    crl_empty = root / "crl-empty.pem"
    certbuilder.write_crl(crl_empty, ca.crl(number=1, lifetime=_LIFETIME))
    crl_revoking = root / "crl-revoking.pem"
    certbuilder.write_crl(crl_revoking, ca.crl([serials["revoked"]], number=2, lifetime=_LIFETIME))
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
