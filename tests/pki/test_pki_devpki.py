"""The development PKI: certificate profiles, file layout, issuing and revoking."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import Role, TrustCommunity
from palais.pki import (
    DevPki,
    IssuedIdentity,
    create_dev_pki,
    issue_identity,
    load_dev_pki,
    revoke,
)

CA_NAMES = {
    TrustCommunity.AVOCATS: "AC Avocats - Conseil National des Barreaux (développement)",
    TrustCommunity.JUSTICE: "AC Ministère de la Justice - Agents (développement)",
    TrustCommunity.COURT_SYSTEMS: "AC Juridictions - Systèmes (développement)",
    TrustCommunity.ADMIN: "AC Palais - Administration (développement)",
}


def cert_at(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def crl_at(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def attr(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


T = TypeVar("T", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[T]) -> T:
    return cert.extensions.get_extension_for_class(kind).value


def assert_p256_sha256(cert: x509.Certificate) -> None:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


# --- CAs ---------------------------------------------------------------------


@pytest.mark.parametrize("group", list(TrustCommunity))
def test_community_ca_profile(shared_pki: DevPki, group: TrustCommunity) -> None:
    ca = cert_at(shared_pki.anchor_path(group))
    assert attr(ca.subject, NameOID.COMMON_NAME) == [CA_NAMES[group]]
    assert attr(ca.subject, NameOID.COUNTRY_NAME) == ["FR"]
    assert ca.issuer == ca.subject
    assert_p256_sha256(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca and constraints.value.path_length == 0
    usage = ext(ca, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ski = ext(ca, x509.SubjectKeyIdentifier)
    assert ext(ca, x509.AuthorityKeyIdentifier).key_identifier == ski.digest


def test_infrastructure_and_stranger_cas(shared_pki: DevPki) -> None:
    infra = cert_at(shared_pki.ca_path)
    assert attr(infra.subject, NameOID.COMMON_NAME) == [
        "AC Palais - Infrastructure (développement)"
    ]
    stranger = cert_at(shared_pki.stranger_ca_path)
    anchors = [cert_at(p).subject for p in shared_pki.anchor_paths().values()]
    assert stranger.subject not in anchors
    assert infra.subject not in anchors


# --- leaves --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "title", "organization", "serial"),
    [
        ("avocat", "AVOCAT", "Barreau de Paris", "CNB-75-012345"),
        ("collaborateur", "COLLABORATEUR", "Barreau de Paris", "CNB-75-054321"),
        ("greffier", "GREFFIER", "Ministère de la Justice", "MJ-A-104233"),
        ("magistrat", "MAGISTRAT", "Ministère de la Justice", "MJ-M-009871"),
        ("admin", "ADMINISTRATEUR", "Palais", "PAL-ADM-0001"),
    ],
)
def test_person_certificate_profile(
    samples: dict[str, IssuedIdentity],
    name: str,
    title: str,
    organization: str,
    serial: str,
) -> None:
    cert = cert_at(samples[name].cert_path)
    subject = cert.subject
    assert attr(subject, NameOID.COUNTRY_NAME) == ["FR"]
    assert attr(subject, NameOID.ORGANIZATION_NAME) == [organization]
    assert attr(subject, NameOID.TITLE) == [title]
    assert attr(subject, NameOID.SERIAL_NUMBER) == [serial]
    given = attr(subject, NameOID.GIVEN_NAME)
    surname = attr(subject, NameOID.SURNAME)
    assert surname[0] == surname[0].upper()
    assert attr(subject, NameOID.COMMON_NAME) == [f"{given[0]} {surname[0]}"]
    assert_p256_sha256(cert)

    sans = ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.RFC822Name) == [samples[name].address]
    assert sans.get_values_for_type(x509.DNSName) == []
    assert set(ext(cert, x509.ExtendedKeyUsage)) == {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
    }
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment and not usage.value.key_cert_sign
    assert not ext(cert, x509.BasicConstraints).ca


def test_person_issued_by_the_role_community(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    expected = {
        "avocat": TrustCommunity.AVOCATS,
        "collaborateur": TrustCommunity.AVOCATS,
        "greffier": TrustCommunity.JUSTICE,
        "magistrat": TrustCommunity.JUSTICE,
        "juridiction": TrustCommunity.COURT_SYSTEMS,
        "admin": TrustCommunity.ADMIN,
    }
    for name, group in expected.items():
        cert = cert_at(samples[name].cert_path)
        anchor = cert_at(shared_pki.anchor_path(group))
        cert.verify_directly_issued_by(anchor)
        assert ext(cert, x509.AuthorityKeyIdentifier).key_identifier == (
            ext(anchor, x509.SubjectKeyIdentifier).digest
        )
    cert_at(samples["stranger"].cert_path).verify_directly_issued_by(
        cert_at(shared_pki.stranger_ca_path)
    )


def test_court_system_certificate_profile(samples: dict[str, IssuedIdentity]) -> None:
    cert = cert_at(samples["juridiction"].cert_path)
    assert attr(cert.subject, NameOID.COMMON_NAME) == ["Portalis TJ Paris"]
    assert attr(cert.subject, NameOID.ORGANIZATION_NAME) == ["Tribunal judiciaire de Paris"]
    assert attr(cert.subject, NameOID.TITLE) == []
    sans = ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.RFC822Name) == ["portalis@tj-paris.justice.fr"]
    assert sans.get_values_for_type(x509.DNSName) == ["tj-paris.justice.fr"]
    assert set(ext(cert, x509.ExtendedKeyUsage)) == {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    }


def test_server_certificate_profile(shared_pki: DevPki) -> None:
    cert = cert_at(shared_pki.server_cert_path)
    cert.verify_directly_issued_by(cert_at(shared_pki.ca_path))
    assert_p256_sha256(cert)
    sans = ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ip_address("127.0.0.1")]
    assert list(ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(cert, x509.KeyUsage).digital_signature


def test_server_names_are_configurable(tmp_path: Path) -> None:
    pki = create_dev_pki(
        tmp_path / "pki", hostnames=("palais.test", "localhost"), ips=("127.0.0.1", "::1")
    )
    sans = ext(cert_at(pki.server_cert_path), x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["palais.test", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ip_address("127.0.0.1"),
        ip_address("::1"),
    ]


def test_evidence_certificate_profile(shared_pki: DevPki) -> None:
    cert = cert_at(shared_pki.evidence_cert_path)
    cert.verify_directly_issued_by(cert_at(shared_pki.ca_path))
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    purposes = set(ext(cert, x509.ExtendedKeyUsage))
    assert ExtendedKeyUsageOID.SERVER_AUTH not in purposes
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in purposes
    assert ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes


# --- files ---------------------------------------------------------------------


def test_layout_and_permissions(shared_pki: DevPki, samples: dict[str, IssuedIdentity]) -> None:
    root = shared_pki.root
    expected_public = [
        "ca.pem",
        "server.pem",
        "evidence.pem",
        "anchors/avocats.pem",
        "anchors/justice.pem",
        "anchors/juridictions.pem",
        "anchors/admin.pem",
        "untrusted/stranger.pem",
        "crl/avocats.pem",
        "crl/justice.pem",
        "crl/juridictions.pem",
        "crl/admin.pem",
        "crl/infrastructure.pem",
        "crl/stranger.pem",
        "identities/avocat.pem",
    ]
    expected_secret = [
        "server.key",
        "evidence.key",
        "identities/avocat.key",
        "private/avocats.key",
        "private/justice.key",
        "private/juridictions.key",
        "private/admin.key",
        "private/infrastructure.key",
        "private/stranger.key",
    ]
    for relative in expected_public:
        assert (root / relative).is_file(), relative
    for relative in expected_secret:
        path = root / relative
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, relative
        assert b"-----BEGIN PRIVATE KEY-----" in path.read_bytes()  # PKCS#8, unencrypted
    assert stat.S_IMODE((root / "private").stat().st_mode) == 0o700
    assert not list(root.rglob("*.tmp"))
    assert samples["avocat"].cert_path == root / "identities" / "avocat.pem"
    assert samples["avocat"].key_path == root / "identities" / "avocat.key"


def test_anchor_and_crl_helpers(shared_pki: DevPki) -> None:
    assert shared_pki.anchor_paths() == {
        group: shared_pki.root / "anchors" / f"{group.value}.pem" for group in TrustCommunity
    }
    assert shared_pki.crl_paths() == tuple(
        shared_pki.root / "crl" / f"{group.value}.pem" for group in TrustCommunity
    )


@pytest.mark.parametrize("group", list(TrustCommunity))
def test_every_trusted_ca_has_an_empty_crl(shared_pki: DevPki, group: TrustCommunity) -> None:
    crl = crl_at(shared_pki.crl_path(group))
    ca = cert_at(shared_pki.anchor_path(group))
    assert crl.issuer == ca.subject
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(key)
    assert len(crl) == 0
    assert crl.next_update_utc is not None
    ahead = crl.next_update_utc - datetime.now(UTC)
    assert timedelta(days=364) < ahead <= timedelta(days=366)
    assert crl.last_update_utc <= datetime.now(UTC)


def test_load_dev_pki_reopens(shared_pki: DevPki) -> None:
    assert load_dev_pki(shared_pki.root) == shared_pki


def test_load_dev_pki_names_missing_files(pki: DevPki) -> None:
    pki.crl_path(TrustCommunity.JUSTICE).unlink()
    with pytest.raises(FileNotFoundError, match=r"crl/justice\.pem"):
        load_dev_pki(pki.root)


def test_create_refuses_to_overwrite(pki: DevPki) -> None:
    before = pki.anchor_path(TrustCommunity.AVOCATS).read_bytes()
    with pytest.raises(FileExistsError):
        create_dev_pki(pki.root)
    assert pki.anchor_path(TrustCommunity.AVOCATS).read_bytes() == before


# --- issuing -------------------------------------------------------------------


def test_issue_identity_defaults_and_overrides(pki: DevPki) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = datetime(2030, 1, 1, tzinfo=UTC)
    issued = issue_identity(
        pki,
        "maitre-durand",
        role=Role.AVOCAT,
        given_name="Élise",
        surname="Durand",
        address="Elise.Durand@Barreau-Lyon.FR",
        serial_number="CNB-69-000777",
        organization="Barreau de Lyon",
        not_before=start,
        not_after=end,
    )
    cert = cert_at(issued.cert_path)
    assert attr(cert.subject, NameOID.COMMON_NAME) == ["Élise DURAND"]
    assert attr(cert.subject, NameOID.ORGANIZATION_NAME) == ["Barreau de Lyon"]
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == end
    assert issued.address == "elise.durand@barreau-lyon.fr"
    assert len(issued.fingerprint) == 64


def test_issue_identity_refuses_bad_names(pki: DevPki) -> None:
    for name in ("../escape", ".hidden", "", "a/b", "x" * 65):
        with pytest.raises(ValueError, match="identity name"):
            issue_identity(
                pki, name, role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr"
            )


def test_issue_identity_refuses_duplicates(pki: DevPki) -> None:
    issue_identity(pki, "dup", role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr")
    with pytest.raises(FileExistsError):
        issue_identity(pki, "dup", role=Role.AVOCAT, given_name="C", surname="D", address="c@d.fr")


def test_issue_identity_requires_a_person_name(pki: DevPki) -> None:
    with pytest.raises(ValueError, match="given_name and surname"):
        issue_identity(pki, "anonymous", role=Role.GREFFIER, address="x@justice.fr")


# --- revoking ------------------------------------------------------------------


def test_revoke_adds_to_the_issuers_crl(pki: DevPki) -> None:
    first = issue_identity(
        pki, "a1", role=Role.AVOCAT, given_name="A", surname="Un", address="a1@b.fr"
    )
    second = issue_identity(
        pki, "a2", role=Role.COLLABORATEUR, given_name="A", surname="Deux", address="a2@b.fr"
    )
    clerk = issue_identity(
        pki, "g1", role=Role.GREFFIER, given_name="G", surname="Un", address="g1@justice.fr"
    )
    path = revoke(pki, first.cert_path)
    assert path == pki.crl_path(TrustCommunity.AVOCATS)
    revoke(pki, second.cert_path, reason=x509.ReasonFlags.key_compromise)
    revoke(pki, first.cert_path)  # idempotent

    crl = crl_at(path)
    serials = [entry.serial_number for entry in crl]
    assert sorted(serials) == sorted(
        [cert_at(first.cert_path).serial_number, cert_at(second.cert_path).serial_number]
    )
    entry = crl.get_revoked_certificate_by_serial_number(cert_at(second.cert_path).serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 4
    key = cert_at(pki.anchor_path(TrustCommunity.AVOCATS)).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(key)
    assert len(crl_at(pki.crl_path(TrustCommunity.JUSTICE))) == 0
    assert cert_at(clerk.cert_path).serial_number not in serials


def test_revoke_refuses_foreign_certificates(pki: DevPki, tmp_path: Path) -> None:
    other = create_dev_pki(tmp_path / "other")
    foreign = issue_identity(
        other, "x", role=Role.AVOCAT, given_name="X", surname="Y", address="x@y.fr"
    )
    with pytest.raises(ValueError, match="no CA"):
        revoke(pki, foreign.cert_path)


# --- cross-check with the openssl command ----------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
def test_openssl_verifies_chains_strictly(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    bundle = shared_pki.root.parent / "all-anchors.pem"
    bundle.write_bytes(b"".join(p.read_bytes() for p in shared_pki.anchor_paths().values()))
    crl_args = [arg for p in shared_pki.crl_paths() for arg in ("-CRLfile", str(p))]
    for name in ("avocat", "collaborateur", "greffier", "magistrat", "juridiction", "admin"):
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-x509_strict",
                "-crl_check",
                "-purpose",
                "sslclient",
                "-CAfile",
                str(bundle),
                *crl_args,
                str(samples[name].cert_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    server = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(shared_pki.ca_path),
            str(shared_pki.server_cert_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert server.returncode == 0, server.stdout + server.stderr
