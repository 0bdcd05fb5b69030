"""identify(): from a verified client certificate to a role and an address."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import CertificateIdentity, Role, TrustCommunity
from palais.pki import (
    CaName,
    CertificateRefused,
    DevPki,
    IssuedIdentity,
    TrustAnchors,
    TrustConfigError,
    certbuilder,
    create_dev_pki,
    issue_identity,
    revoke,
)
from palais.pki.certbuilder import CertificateAuthority


def der_of(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def anchors_of(pki: DevPki) -> TrustAnchors:
    return TrustAnchors(pki.anchor_paths(), pki.crl_paths())


def refusal(anchors: TrustAnchors, der: bytes, **kwargs: datetime) -> str:
    with pytest.raises(CertificateRefused) as caught:
        anchors.identify(der, **kwargs)
    return caught.value.reason


Customize = Callable[[x509.CertificateBuilder], x509.CertificateBuilder]


def craft(
    pki: DevPki,
    ca: CaName,
    subject: list[tuple[x509.ObjectIdentifier, str]],
    *,
    sans: list[x509.GeneralName] | None = None,
    purposes: list[x509.ObjectIdentifier] | None = None,
    customize: Customize | None = None,
    issuer_name_from: CaName | None = None,
) -> bytes:
    """A certificate issue_identity() would never make, signed by a dev CA.

    ``issuer_name_from`` writes another CA's name as issuer while still
    signing with ``ca``'s key: a forgery by name.
    """
    authority = CertificateAuthority.load(pki.ca_cert_path(ca), pki.ca_key_path(ca))
    issuer_cert = (
        x509.load_pem_x509_certificate(pki.ca_cert_path(issuer_name_from).read_bytes())
        if issuer_name_from is not None
        else authority.cert
    )
    key = certbuilder.new_key()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(certbuilder.name_of(subject))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if purposes is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if customize is not None:
        builder = customize(builder)
    return builder.sign(authority.key, hashes.SHA256()).public_bytes(Encoding.DER)


LAWYER_SUBJECT = [
    (NameOID.COUNTRY_NAME, "FR"),
    (NameOID.ORGANIZATION_NAME, "Barreau de Paris"),
    (NameOID.TITLE, "AVOCAT"),
    (NameOID.COMMON_NAME, "Camille DUPONT"),
]
LAWYER_SAN: list[x509.GeneralName] = [x509.RFC822Name("camille@avocat.fr")]
CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]


# --- each role -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role", "display_name", "serial"),
    [
        ("avocat", Role.AVOCAT, "Camille DUPONT", "CNB-75-012345"),
        ("collaborateur", Role.COLLABORATEUR, "Lucas MARTIN", "CNB-75-054321"),
        ("greffier", Role.GREFFIER, "Nadia BERNARD", "MJ-A-104233"),
        ("magistrat", Role.MAGISTRAT, "Paul LEFÈVRE", "MJ-M-009871"),
        ("juridiction", Role.COURT_SYSTEM, "Portalis TJ Paris", None),
        ("admin", Role.ADMIN, "Inès MOREAU", "PAL-ADM-0001"),
    ],
)
def test_identify_each_role(
    shared_pki: DevPki,
    samples: dict[str, IssuedIdentity],
    name: str,
    role: Role,
    display_name: str,
    serial: str | None,
) -> None:
    der = der_of(samples[name].cert_path)
    identity = anchors_of(shared_pki).identify(der)
    assert identity == CertificateIdentity(
        role=role,
        address=samples[name].address,
        display_name=display_name,
        fingerprint=hashlib.sha256(der).hexdigest(),
        subject=identity.subject,
        serial_number=serial,
    )
    assert identity.fingerprint == samples[name].fingerprint
    assert f"CN={display_name}" in identity.subject


def test_address_is_lower_cased(pki: DevPki) -> None:
    issued = issue_identity(
        pki,
        "upper",
        role=Role.MAGISTRAT,
        given_name="Anne",
        surname="Roux",
        address="Anne.ROUX@Justice.FR",
    )
    assert anchors_of(pki).identify(der_of(issued.cert_path)).address == "anne.roux@justice.fr"


def test_subject_is_readable_for_logs(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    subject = anchors_of(shared_pki).identify(der_of(samples["avocat"].cert_path)).subject
    assert "title=AVOCAT" in subject
    assert "serialNumber=CNB-75-012345" in subject


def test_title_is_optional_for_single_role_communities(pki: DevPki) -> None:
    admin = issue_identity(
        pki, "adm", role=Role.ADMIN, given_name="A", surname="B", address="a@palais.fr", title=""
    )
    system = issue_identity(
        pki, "cph", role=Role.COURT_SYSTEM, common_name="CPH Bordeaux", address="cph@j.fr"
    )
    anchors = anchors_of(pki)
    assert anchors.identify(der_of(admin.cert_path)).role is Role.ADMIN
    assert anchors.identify(der_of(system.cert_path)).role is Role.COURT_SYSTEM


def test_title_matching_ignores_case(pki: DevPki) -> None:
    issued = issue_identity(
        pki,
        "m",
        role=Role.MAGISTRAT,
        given_name="A",
        surname="B",
        address="m@j.fr",
        title="Magistrat",
    )
    assert anchors_of(pki).identify(der_of(issued.cert_path)).role is Role.MAGISTRAT


# --- refusals ---------------------------------------------------------------------


def test_stranger_ca_is_refused(shared_pki: DevPki, samples: dict[str, IssuedIdentity]) -> None:
    reason = refusal(anchors_of(shared_pki), der_of(samples["stranger"].cert_path))
    assert "not issued by a trust anchor" in reason


def test_forged_issuer_name_is_refused(pki: DevPki) -> None:
    # Names the bar council's CA as issuer but was signed by the stranger.
    der = craft(
        pki,
        "stranger",
        LAWYER_SUBJECT,
        sans=LAWYER_SAN,
        purposes=CLIENT,
        issuer_name_from=TrustCommunity.AVOCATS,
    )
    assert "not issued by a trust anchor" in refusal(anchors_of(pki), der)


def test_server_certificate_is_not_a_client(shared_pki: DevPki) -> None:
    # Issued by the infrastructure CA, which vouches for no client community.
    assert "not issued by a trust anchor" in refusal(
        anchors_of(shared_pki), der_of(shared_pki.server_cert_path)
    )


@pytest.mark.parametrize(
    ("issuer", "role", "title"),
    [
        (TrustCommunity.AVOCATS, Role.GREFFIER, "GREFFIER"),
        (TrustCommunity.AVOCATS, Role.ADMIN, "ADMINISTRATEUR"),
        (TrustCommunity.JUSTICE, Role.AVOCAT, "AVOCAT"),
        (TrustCommunity.ADMIN, Role.MAGISTRAT, "MAGISTRAT"),
        (TrustCommunity.COURT_SYSTEMS, Role.AVOCAT, "AVOCAT"),
    ],
)
def test_title_not_allowed_for_anchor_is_refused(
    pki: DevPki, issuer: TrustCommunity, role: Role, title: str
) -> None:
    issued = issue_identity(
        pki,
        "misissued",
        role=role,
        given_name="A",
        surname="B",
        address="a@b.fr",
        issuer=issuer,
    )
    reason = refusal(anchors_of(pki), der_of(issued.cert_path))
    assert f"title {title!r} is not allowed for the {issuer.value} anchor" == reason


def test_unknown_title_is_refused(pki: DevPki) -> None:
    issued = issue_identity(
        pki,
        "huissier",
        role=Role.AVOCAT,
        given_name="A",
        surname="B",
        address="a@b.fr",
        title="HUISSIER",
    )
    assert "unknown title" in refusal(anchors_of(pki), der_of(issued.cert_path))


@pytest.mark.parametrize("group", [TrustCommunity.AVOCATS, TrustCommunity.JUSTICE])
def test_missing_title_is_refused_where_it_decides_the_role(
    pki: DevPki, group: TrustCommunity
) -> None:
    role = Role.AVOCAT if group is TrustCommunity.AVOCATS else Role.GREFFIER
    issued = issue_identity(
        pki, "untitled", role=role, given_name="A", surname="B", address="a@b.fr", title=""
    )
    assert "no title" in refusal(anchors_of(pki), der_of(issued.cert_path))


def test_two_titles_are_refused(pki: DevPki) -> None:
    subject = [*LAWYER_SUBJECT, (NameOID.TITLE, "COLLABORATEUR")]
    der = craft(pki, TrustCommunity.AVOCATS, subject, sans=LAWYER_SAN, purposes=CLIENT)
    assert "several" in refusal(anchors_of(pki), der)


def test_missing_email_is_refused(pki: DevPki) -> None:
    without_san = craft(pki, TrustCommunity.AVOCATS, LAWYER_SUBJECT, purposes=CLIENT)
    dns_only = craft(
        pki, TrustCommunity.AVOCATS, LAWYER_SUBJECT, sans=[x509.DNSName("a.fr")], purposes=CLIENT
    )
    anchors = anchors_of(pki)
    assert "no e-mail address" in refusal(anchors, without_san)
    assert "no e-mail address" in refusal(anchors, dns_only)


def test_two_emails_are_refused(pki: DevPki) -> None:
    sans: list[x509.GeneralName] = [x509.RFC822Name("a@b.fr"), x509.RFC822Name("c@d.fr")]
    der = craft(pki, TrustCommunity.AVOCATS, LAWYER_SUBJECT, sans=sans, purposes=CLIENT)
    assert "several e-mail addresses" in refusal(anchors_of(pki), der)


@pytest.mark.parametrize("address", ["a@b.fr>\r\nBcc: x@y.fr", "no-at-sign", "a b@c.fr"])
def test_unsafe_email_is_refused(pki: DevPki, address: str) -> None:
    der = craft(
        pki,
        TrustCommunity.AVOCATS,
        LAWYER_SUBJECT,
        sans=[x509.RFC822Name(address)],
        purposes=CLIENT,
    )
    assert "addr-spec" in refusal(anchors_of(pki), der)


def test_control_characters_in_name_are_refused(pki: DevPki) -> None:
    subject = [*LAWYER_SUBJECT[:-1], (NameOID.COMMON_NAME, "Camille\r\nBcc: x@y.fr")]
    der = craft(pki, TrustCommunity.AVOCATS, subject, sans=LAWYER_SAN, purposes=CLIENT)
    assert "control character" in refusal(anchors_of(pki), der)


def test_wrong_purpose_is_refused(pki: DevPki) -> None:
    server_only = craft(
        pki,
        TrustCommunity.AVOCATS,
        LAWYER_SUBJECT,
        sans=LAWYER_SAN,
        purposes=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    assert "clientAuth" in refusal(anchors_of(pki), server_only)


def test_ca_certificate_is_not_a_client(pki: DevPki) -> None:
    def as_ca(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        return builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)

    der = craft(
        pki,
        TrustCommunity.AVOCATS,
        LAWYER_SUBJECT,
        sans=LAWYER_SAN,
        purposes=CLIENT,
        customize=as_ca,
    )
    assert "CA certificate" in refusal(anchors_of(pki), der)


def test_unknown_critical_extension_is_refused(pki: DevPki) -> None:
    def odd(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        extension = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
        )
        return builder.add_extension(extension, critical=True)

    der = craft(
        pki, TrustCommunity.AVOCATS, LAWYER_SUBJECT, sans=LAWYER_SAN, purposes=CLIENT, customize=odd
    )
    assert "unknown critical extension" in refusal(anchors_of(pki), der)


def test_malformed_certificate_is_refused(shared_pki: DevPki) -> None:
    assert refusal(anchors_of(shared_pki), b"\x30\x03\x02\x01\x00") == "malformed certificate"


def test_expired_and_not_yet_valid_are_refused(pki: DevPki) -> None:
    now = datetime.now(UTC)
    expired = issue_identity(
        pki,
        "old",
        role=Role.AVOCAT,
        given_name="A",
        surname="B",
        address="old@b.fr",
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    future = issue_identity(
        pki,
        "new",
        role=Role.AVOCAT,
        given_name="A",
        surname="B",
        address="new@b.fr",
        not_before=now + timedelta(days=1),
        not_after=now + timedelta(days=400),
    )
    anchors = anchors_of(pki)
    assert "expired" in refusal(anchors, der_of(expired.cert_path))
    assert "not valid before" in refusal(anchors, der_of(future.cert_path))


def test_validity_is_rechecked_on_cached_results(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    anchors = anchors_of(shared_pki)
    der = der_of(samples["avocat"].cert_path)
    anchors.identify(der)  # now cached
    later = datetime.now(UTC) + timedelta(days=4 * 365)
    assert "expired" in refusal(anchors, der, now=later)


def test_stale_crl_fails_closed(shared_pki: DevPki, samples: dict[str, IssuedIdentity]) -> None:
    # The certificate is still valid in 18 months, the CRL (one year) is not.
    in_18_months = datetime.now(UTC) + timedelta(days=540)
    reason = refusal(
        anchors_of(shared_pki), der_of(samples["greffier"].cert_path), now=in_18_months
    )
    assert "CRL" in reason and "expired" in reason


# --- revocation and reload --------------------------------------------------------


def test_revocation_applies_after_reload(pki: DevPki) -> None:
    issued = issue_identity(
        pki, "leaving", role=Role.AVOCAT, given_name="A", surname="B", address="l@b.fr"
    )
    der = der_of(issued.cert_path)
    anchors = anchors_of(pki)
    assert anchors.identify(der).role is Role.AVOCAT  # and cached

    revoke(pki, issued.cert_path)
    # Until reloaded, the anchors keep the CRL they were loaded with.
    assert anchors.identify(der).role is Role.AVOCAT
    anchors.reload()
    assert "revoked" in refusal(anchors, der)
    assert "revoked" in refusal(anchors_of(pki), der)


def test_failed_reload_keeps_previous_state(pki: DevPki) -> None:
    issued = issue_identity(
        pki, "ok", role=Role.AVOCAT, given_name="A", surname="B", address="ok@b.fr"
    )
    anchors = anchors_of(pki)
    pki.crl_path(TrustCommunity.JUSTICE).write_text("not a CRL")
    with pytest.raises(TrustConfigError, match=r"justice\.pem"):
        anchors.reload()
    assert anchors.identify(der_of(issued.cert_path)).role is Role.AVOCAT


# --- configuration errors ---------------------------------------------------------


def test_every_anchor_needs_a_crl(pki: DevPki) -> None:
    crls = [p for p in pki.crl_paths() if p != pki.crl_path(TrustCommunity.ADMIN)]
    with pytest.raises(TrustConfigError, match="no CRL configured"):
        TrustAnchors(pki.anchor_paths(), crls)


def test_crl_of_an_unknown_ca_is_an_error(pki: DevPki) -> None:
    crls = [*pki.crl_paths(), pki.crl_path("stranger")]
    with pytest.raises(TrustConfigError, match="not signed by a configured anchor"):
        TrustAnchors(pki.anchor_paths(), crls)


def test_anchor_must_be_a_ca(pki: DevPki, samples: dict[str, IssuedIdentity]) -> None:
    anchors = {**pki.anchor_paths(), TrustCommunity.ADMIN: samples["admin"].cert_path}
    with pytest.raises(TrustConfigError, match="not a CA certificate"):
        TrustAnchors(anchors, pki.crl_paths())


def test_one_ca_for_two_communities_is_an_error(pki: DevPki) -> None:
    anchors = {**pki.anchor_paths(), TrustCommunity.ADMIN: pki.anchor_path(TrustCommunity.AVOCATS)}
    crls = [p for p in pki.crl_paths() if p != pki.crl_path(TrustCommunity.ADMIN)]
    with pytest.raises(TrustConfigError, match="both"):
        TrustAnchors(anchors, crls)


def test_missing_anchor_file_is_an_error(pki: DevPki, tmp_path: Path) -> None:
    anchors = {**pki.anchor_paths(), TrustCommunity.ADMIN: tmp_path / "absent.pem"}
    with pytest.raises(TrustConfigError, match=r"absent\.pem"):
        TrustAnchors(anchors, pki.crl_paths())


def test_anchor_file_may_hold_several_cas(pki: DevPki, tmp_path: Path) -> None:
    # CA rollover: old and new bar council CAs side by side in one file.
    # Same subject names as pki's CAs: only the signature tells them apart.
    other = create_dev_pki(tmp_path / "other")
    bundle = tmp_path / "avocats-bundle.pem"
    bundle.write_bytes(
        pki.anchor_path(TrustCommunity.AVOCATS).read_bytes()
        + other.anchor_path(TrustCommunity.AVOCATS).read_bytes()
    )
    anchors = TrustAnchors(
        {**pki.anchor_paths(), TrustCommunity.AVOCATS: bundle},
        [*pki.crl_paths(), other.crl_path(TrustCommunity.AVOCATS)],
    )
    for source in (pki, other):
        issued = issue_identity(
            source, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr"
        )
        assert anchors.identify(der_of(issued.cert_path)).role is Role.AVOCAT


def test_refusal_carries_its_reason() -> None:
    error = CertificateRefused("certificate expired on 2020-01-01")
    assert error.reason == str(error) == "certificate expired on 2020-01-01"
