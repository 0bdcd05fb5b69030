"""certbuilder: the one place that makes CAs, leaves, CRLs and PEM files."""

from __future__ import annotations

import ipaddress
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import Role
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Validity


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(certbuilder.name("Test CA", organization="Palais tests"))


def test_ca_is_self_signed_and_issues_end_entities_only(ca: CertificateAuthority) -> None:
    ca.cert.verify_directly_issued_by(ca.cert)
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert ca.cert.not_valid_before_utc < certbuilder.now() < ca.cert.not_valid_after_utc


def test_leaf_names_and_chain(ca: CertificateAuthority) -> None:
    issued = ca.issue(
        certbuilder.name("localhost", organization="Palais tests", country="FR"),
        profile=certbuilder.SERVER,
        emails=["ops@palais.test"],
        dns_names=["localhost"],
        ips=["127.0.0.1"],
    )
    issued.cert.verify_directly_issued_by(ca.cert)
    subject = issued.cert.subject
    assert [a.oid for a in subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.COMMON_NAME,
    ]
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["ops@palais.test"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    aki = issued.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert not issued.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert len(issued.fingerprint) == 64 and issued.serial == issued.cert.serial_number


@pytest.mark.parametrize(
    ("profile", "purposes", "commitment"),
    [
        (certbuilder.SERVER, [ExtendedKeyUsageOID.SERVER_AUTH], False),
        (certbuilder.CLIENT, [ExtendedKeyUsageOID.CLIENT_AUTH], False),
        (
            certbuilder.CARD,
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION],
            False,
        ),
        (
            certbuilder.SYSTEM,
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            False,
        ),
        (
            certbuilder.EVIDENCE,
            [ExtendedKeyUsageOID.EMAIL_PROTECTION, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")],
            True,
        ),
    ],
)
def test_profiles(
    ca: CertificateAuthority,
    profile: certbuilder.Profile,
    purposes: list[x509.ObjectIdentifier],
    commitment: bool,
) -> None:
    cert = ca.issue(certbuilder.name("leaf"), profile=profile).cert
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == purposes
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert usage.content_commitment is commitment


def test_role_profiles() -> None:
    assert certbuilder.role_profile(Role.COURT_SYSTEM) is certbuilder.SYSTEM
    for role in set(Role) - {Role.COURT_SYSTEM}:
        assert certbuilder.role_profile(role) is certbuilder.CARD


def test_validity_windows(ca: CertificateAuthority) -> None:
    now = certbuilder.now()
    expired = ca.issue(
        certbuilder.name("old"), profile=certbuilder.CLIENT, validity=Validity.expired()
    ).cert
    assert expired.not_valid_after_utc < now
    early = ca.issue(
        certbuilder.name("early"), profile=certbuilder.CLIENT, validity=Validity.not_yet_valid()
    ).cert
    assert early.not_valid_before_utc > now
    current = Validity.lasting(timedelta(days=2))
    assert current.not_before < now < current.not_after
    with pytest.raises(ValueError, match="later than"):
        Validity(now, now)


def test_default_leaf_validity_stops_at_the_cas_expiry() -> None:
    short = CertificateAuthority.create(
        certbuilder.name("Short CA"), validity=Validity.lasting(timedelta(days=2))
    )
    leaf = short.issue(certbuilder.name("leaf"), profile=certbuilder.CLIENT).cert
    assert leaf.not_valid_after_utc == short.cert.not_valid_after_utc
    assert leaf.not_valid_before_utc < certbuilder.now()


def test_crl_revokes_serials_and_keeps_entries(ca: CertificateAuthority) -> None:
    kept = (
        x509.RevokedCertificateBuilder()
        .serial_number(7)
        .revocation_date(certbuilder.now() - timedelta(days=3))
        .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        .build()
    )
    crl = ca.crl([42, kept], number=5)
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.issuer == ca.cert.subject
    assert sorted(entry.serial_number for entry in crl) == [7, 42]
    entry = crl.get_revoked_certificate_by_serial_number(7)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 5
    assert crl.last_update_utc < certbuilder.now()
    assert crl.next_update_utc is not None and crl.next_update_utc > certbuilder.now()
    assert len(list(ca.crl())) == 0


def test_written_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue(certbuilder.name("leaf"), profile=certbuilder.CLIENT)
    cert_path, key_path = tmp_path / "sub" / "leaf.pem", tmp_path / "sub" / "leaf.key"
    issued.write(cert_path, key_path)
    certbuilder.write_crl(tmp_path / "crl.pem", ca.crl([issued.serial]))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["crl.pem", "leaf.key", "leaf.pem", "sub"]
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == issued.cert
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == issued.key.public_key()
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None
    reloaded = CertificateAuthority.load(cert_path, key_path)
    assert reloaded.cert == issued.cert
