"""Trust material checked before it is put in force, and applied from PEM data.

CRLs: another CA's signature, another issuer, an older or equal number, a
delta, a stale one are refused; a newer one passes. TrustAnchors from
stored PEM: a stale CRL is used during the grace (one warning), then every
client of its CA is refused; intermediates hang under their community's
anchor; a CA without a CRL has its clients refused. The TLS contexts from
PEM refuse a revoked client and leave no file behind.
"""

from __future__ import annotations

import http.server
import logging
import os
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from palais.mailbox.identity import Role, TrustCommunity
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority
from palais.pki.devpki import DevPki, create_dev_pki, issue_identity, revoke
from palais.pki.identify import CertificateRefused, TrustAnchors, TrustedCa
from palais.pki.tls import NO_CHECK_TIME, server_context_from_pem
from palais.pki.trust_update import (
    CaInfo,
    CrlRejected,
    CrlUnchanged,
    TrustRejected,
    check_crl,
    crl_issuer,
    crl_urls,
    describe_ca,
    fetch_crl,
)
from tests.pki.test_pki_tls import client_ctx, handshake

AVOCATS = TrustCommunity.AVOCATS
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _now_is_when_the_test_runs() -> None:
    # CRLs made in a test are dated by the real clock: NOW must not be the
    # time this module was collected, minutes earlier in a long run.
    global NOW
    NOW = datetime.now(UTC)


def ca_of(pki: DevPki, group: TrustCommunity = AVOCATS) -> CertificateAuthority:
    return CertificateAuthority.load(pki.ca_cert_path(group), pki.ca_key_path(group))


def info_of(ca: CertificateAuthority) -> CaInfo:
    return describe_ca(ca.cert.public_bytes(Encoding.PEM))


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(Encoding.PEM)


def check(data: bytes, ca: CaInfo, number: int | None = None, this: datetime | None = None) -> int:
    checked = check_crl(data, ca, current_number=number, current_this_update=this, now=NOW)
    assert checked.number is not None
    return checked.number


# --- check_crl -------------------------------------------------------------------------


def test_a_crl_signed_by_another_ca_is_refused(pki: DevPki, tmp_path: Path) -> None:
    # Same subject name (another run of the development PKI): only the
    # signature tells the impostor apart.
    other = ca_of(create_dev_pki(tmp_path / "other"))
    mine = info_of(ca_of(pki))
    forged = pem(other.crl(number=99))
    with pytest.raises(CrlRejected, match="signature"):
        check(forged, mine)
    with pytest.raises(CrlRejected, match="not signed by a CA in use"):
        crl_issuer(forged, [mine])
    # The genuine one passes and is found by its issuer.
    genuine = pem(ca_of(pki).crl(number=2))
    assert crl_issuer(genuine, [info_of(ca_of(pki, TrustCommunity.JUSTICE)), mine]) == mine
    assert check(genuine, mine) == 2


def test_a_crl_of_another_issuer_is_refused(pki: DevPki) -> None:
    justice = pem(ca_of(pki, TrustCommunity.JUSTICE).crl(number=3))
    with pytest.raises(CrlRejected, match="is not the CA"):
        check(justice, info_of(ca_of(pki)))


def test_never_an_older_crl_number(pki: DevPki) -> None:
    ca = ca_of(pki)
    info = info_of(ca)
    in_force = check_crl(
        pem(ca.crl(number=5)), info, current_number=None, current_this_update=None, now=NOW
    )
    for older in (4, 5):
        with pytest.raises(CrlRejected, match="not newer") as refused:
            check(pem(ca.crl(number=older, lifetime=timedelta(days=2))), info, 5, NOW)
        assert not isinstance(refused.value, CrlUnchanged)
    # The same CRL fetched again: nothing to do, not an error.
    with pytest.raises(CrlUnchanged):
        check(in_force.pem, info, 5, in_force.this_update)
    assert check(pem(ca.crl(number=6)), info, 5, in_force.this_update) == 6


def test_stale_future_and_delta_crls_are_refused(pki: DevPki) -> None:
    ca = ca_of(pki)
    info = info_of(ca)
    data = pem(ca.crl(number=2, lifetime=timedelta(hours=1)))
    with pytest.raises(CrlRejected, match="already stale"):
        check_crl(
            data,
            info,
            current_number=None,
            current_this_update=None,
            now=NOW + timedelta(hours=2),
        )
    with pytest.raises(CrlRejected, match="in the future"):
        check_crl(
            data,
            info,
            current_number=None,
            current_this_update=None,
            now=NOW - timedelta(hours=1),
        )
    delta = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - timedelta(minutes=1))
        .next_update(NOW + timedelta(days=1))
        .add_extension(x509.CRLNumber(7), critical=False)
        .add_extension(x509.DeltaCRLIndicator(5), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(CrlRejected, match="delta"):
        check(pem(delta), info)
    with pytest.raises(CrlRejected, match="not a CRL"):
        check(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", info)


def test_only_ca_certificates_are_described(pki: DevPki) -> None:
    lawyer = issue_identity(
        pki, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr"
    )
    with pytest.raises(TrustRejected, match="not a CA"):
        describe_ca(lawyer.cert_path.read_bytes())
    both = (
        pki.anchor_path(AVOCATS).read_bytes() + pki.anchor_path(TrustCommunity.ADMIN).read_bytes()
    )
    with pytest.raises(TrustRejected, match="one at a time"):
        describe_ca(both)
    info = describe_ca(pki.anchor_path(AVOCATS).read_bytes())
    assert info.self_issued and info.crl_urls == ()


# --- TrustAnchors from PEM -------------------------------------------------------------


def stored(pki: DevPki, *, crl: bytes | None = None) -> TrustAnchors:
    """Every community's CA and CRL as the database would hold them."""
    cas = [TrustedCa(g, pki.anchor_path(g).read_bytes()) for g in TrustCommunity]
    crls = [(f"crl:{g}", pki.crl_path(g).read_bytes()) for g in TrustCommunity if g is not AVOCATS]
    if crl is not None:
        crls.append(("crl:avocats", crl))
    return TrustAnchors.from_pem(cas, crls, crl_grace=timedelta(minutes=10), clock=lambda: NOW)


def test_a_stale_crl_is_used_during_the_grace_then_fails_closed(
    pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    lawyer = issue_identity(
        pki, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr"
    )
    der = x509.load_pem_x509_certificate(lawyer.cert_path.read_bytes()).public_bytes(Encoding.DER)
    crl = ca_of(pki).crl(number=2, lifetime=timedelta(hours=1))
    assert crl.next_update_utc is not None
    next_update = crl.next_update_utc
    anchors = stored(pki, crl=pem(crl))
    assert anchors.problems == ()
    assert anchors.identify(der).role is Role.AVOCAT
    assert anchors.stale_crls(NOW) == (frozenset(), frozenset())

    during = next_update + timedelta(minutes=5)
    with caplog.at_level(logging.WARNING, logger="palais.trust"):
        assert anchors.identify(der, now=during).role is Role.AVOCAT
        assert anchors.identify(der, now=during + timedelta(seconds=1)).role is Role.AVOCAT
    warnings = [r for r in caplog.records if "past its nextUpdate" in r.getMessage()]
    assert len(warnings) == 1  # once, not per connection
    fingerprint = info_of(ca_of(pki)).fingerprint
    assert anchors.stale_crls(during) == (frozenset({fingerprint}), frozenset())

    after = next_update + timedelta(minutes=10, seconds=1)
    with pytest.raises(CertificateRefused, match="expired"):
        anchors.identify(der, now=after)
    assert anchors.stale_crls(after) == (frozenset(), frozenset({fingerprint}))
    # Without a grace, fail closed at nextUpdate itself.
    strict = TrustAnchors.from_pem(
        [TrustedCa(AVOCATS, pki.anchor_path(AVOCATS).read_bytes())], [("c", pem(crl))]
    )
    with pytest.raises(CertificateRefused, match="expired"):
        strict.identify(der, now=next_update + timedelta(seconds=1))


def test_revocations_and_missing_crls_from_pem(pki: DevPki) -> None:
    lawyer = issue_identity(
        pki, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr"
    )
    der = x509.load_pem_x509_certificate(lawyer.cert_path.read_bytes()).public_bytes(Encoding.DER)
    without = stored(pki)
    assert any("no CRL in force" in p for p in without.problems)
    with pytest.raises(CertificateRefused, match="no CRL in force"):
        without.identify(der)
    revoke(pki, lawyer.cert_path)
    with pytest.raises(CertificateRefused, match="revoked"):
        stored(pki, crl=pki.crl_path(AVOCATS).read_bytes()).identify(der)
    # A CRL nobody in force signed is left out, not trusted.
    stranger = stored(pki, crl=pki.crl_path("stranger").read_bytes())
    assert any("not signed by a CA in use" in p for p in stranger.problems)


def intermediate_under(root: CertificateAuthority) -> CertificateAuthority:
    key = certbuilder.new_key()
    begin = certbuilder.now() - timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(certbuilder.name("AC Avocats - Cartes", organization="CNB", country="FR"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def test_intermediates_hang_under_their_communitys_anchor(pki: DevPki) -> None:
    root = ca_of(pki)
    inter = intermediate_under(root)
    subject = certbuilder.name_of(
        [(NameOID.TITLE, "AVOCAT"), (NameOID.COMMON_NAME, "Camille DUPONT")]
    )
    leaf = inter.issue(subject, profile=certbuilder.CARD, emails=["c@barreau.fr"])
    der = leaf.cert.public_bytes(Encoding.DER)
    root_pem = root.cert.public_bytes(Encoding.PEM)
    inter_pem = inter.cert.public_bytes(Encoding.PEM)
    assert not describe_ca(inter_pem).self_issued

    def anchors(cas: list[TrustedCa], root_crl: bytes) -> TrustAnchors:
        return TrustAnchors.from_pem(cas, [("root", root_crl), ("inter", pem(inter.crl(number=1)))])

    good = [TrustedCa(AVOCATS, root_pem), TrustedCa(AVOCATS, inter_pem, intermediate=True)]
    assert anchors(good, pem(root.crl(number=5))).identify(der).address == "c@barreau.fr"
    # Its anchor removed: the intermediate is left out with it.
    orphan = anchors(good[1:], pem(root.crl(number=5)))
    assert any("no avocats CA above it" in p for p in orphan.problems)
    with pytest.raises(CertificateRefused, match="not issued by a trust anchor"):
        orphan.identify(der)
    # Under another community's anchor it vouches for nobody.
    misfiled = [
        TrustedCa(AVOCATS, root_pem),
        TrustedCa(TrustCommunity.JUSTICE, inter_pem, intermediate=True),
    ]
    with pytest.raises(CertificateRefused):
        anchors(misfiled, pem(root.crl(number=5))).identify(der)
    # The intermediate revoked by its anchor's CRL: its clients are refused.
    revoked = anchors(good, pem(root.crl([inter.cert.serial_number], number=6)))
    with pytest.raises(CertificateRefused, match="revoked"):
        revoked.identify(der)


# --- TLS contexts from PEM -------------------------------------------------------------


def test_server_context_from_pem_refuses_the_revoked(pki: DevPki, tmp_path: Path) -> None:
    lawyer = issue_identity(
        pki, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="a@b.fr"
    )
    clerk = issue_identity(
        pki, "clerk", role=Role.GREFFIER, given_name="C", surname="D", address="c@j.fr"
    )
    revoke(pki, lawyer.cert_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    anchors = stored(pki, crl=pki.crl_path(AVOCATS).read_bytes())
    ctx = server_context_from_pem(
        pki.server_cert_path,
        pki.server_key_path,
        anchors.ca_pems([AVOCATS, TrustCommunity.JUSTICE]),
        anchors.crl_pems(),
        scratch=scratch,
    )
    refused = handshake(ctx, client_ctx(pki, lawyer))
    assert refused.refused and refused.server_said("certificate revoked")
    assert handshake(ctx, client_ctx(pki, clerk)).accepted
    assert os.listdir(scratch) == []  # the CAs' and CRLs' file is gone
    assert not ctx.verify_flags & NO_CHECK_TIME
    lenient = server_context_from_pem(
        pki.server_cert_path,
        pki.server_key_path,
        anchors.ca_pems(),
        anchors.crl_pems(),
        scratch=scratch,
        lenient_time=True,
    )
    assert lenient.verify_flags & NO_CHECK_TIME
    # Nothing trusted (the operator removed every CA): everyone refused.
    empty = server_context_from_pem(
        pki.server_cert_path, pki.server_key_path, [], [], scratch=scratch
    )
    assert handshake(empty, client_ctx(pki, clerk)).refused
    assert empty.verify_mode == ssl.CERT_REQUIRED


# --- fetching --------------------------------------------------------------------------


@pytest.fixture
def crl_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving what the test puts in the dict."""
    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_crl_over_http(pki: DevPki, crl_server: tuple[str, dict[str, bytes]]) -> None:
    base, served = crl_server
    data = pem(ca_of(pki).crl(number=3))
    served["/avocats.crl"] = data
    assert fetch_crl(f"{base}/avocats.crl", timeout=5) == data
    with pytest.raises(OSError):
        fetch_crl(f"{base}/missing.crl", timeout=5)
    with pytest.raises(OSError, match="larger"):
        fetch_crl(f"{base}/avocats.crl", timeout=5, max_bytes=10)
    with pytest.raises(OSError, match="not an http"):
        fetch_crl("file:///etc/passwd", timeout=5)


def test_crl_urls_are_the_http_distribution_points() -> None:
    key = certbuilder.new_key()
    subject = certbuilder.name("AC test")
    points = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [
                    x509.UniformResourceIdentifier("ldap://dir.example/cn=crl"),
                    x509.UniformResourceIdentifier("http://crl.example/ac.crl"),
                ],
                None,
                None,
                None,
            )
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(points, critical=False)
        .sign(key, hashes.SHA256())
    )
    assert crl_urls(cert) == ("http://crl.example/ac.crl",)
