"""Trust and revocation live, on a running `palais serve`, over real TLS.

Without restarting the gateway: a certificate revoked by an imported CRL,
and another revoked by a CRL fetched over HTTP from its CA's distribution
point, are refused on SMTPS, submission (STARTTLS), IMAPS and HTTPS while
others stay accepted; a removed trust anchor's clients are refused and
accepted again once it is added back; a CRL past its nextUpdate is still
used during the grace, then its CA's clients are refused.
"""

from __future__ import annotations

import http.client
import http.server
import imaplib
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from palais.mailbox.identity import Role, TrustCommunity
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority
from palais.pki.devpki import DevPki, issue_identity, load_dev_pki, revoke
from tests.e2e.instance import Instance, create_instance

LIVE_CONFIG = """
[trust]
watch_interval = 0.2
crl_fetch_interval = 0.3
crl_fetch_timeout = 2
crl_grace = {grace}
"""
# Seconds a CRL past its nextUpdate is still used (the stale-CRL test waits it out).
GRACE = 6
CHANGE_DEADLINE = 15.0  # seconds for a change to reach every listener
LISTENERS = ("smtps", "submission", "imaps", "https")


@dataclass(frozen=True)
class Client:
    cert: Path
    key: Path


class CrlServer:
    """http.server on 127.0.0.1 in a thread, serving what the test publishes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits = 0
        files = self.files
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server_self.hits += 1
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> CrlServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def context(inst: Instance, who: Client) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(inst.ca))
    ctx.load_cert_chain(who.cert, who.key)
    return ctx


def accepted(inst: Instance, listener: str, who: Client) -> bool:
    """Whether ``who`` gets through ``listener`` (handshake and authentication)."""
    ctx = context(inst, who)
    try:
        if listener == "smtps":
            with smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=ctx, timeout=10) as s:
                s.ehlo()
                return s.docmd("AUTH", "EXTERNAL =")[0] == 235
        if listener == "submission":
            with smtplib.SMTP("localhost", inst.port("submission"), timeout=10) as s:
                s.ehlo()
                s.starttls(context=ctx)
                s.ehlo()
                return s.docmd("AUTH", "EXTERNAL =")[0] == 235
        if listener == "imaps":
            imap = imaplib.IMAP4_SSL("localhost", inst.port("imaps"), ssl_context=ctx, timeout=10)
            try:
                imap.authenticate("EXTERNAL", lambda _: b"")
                return True
            finally:
                imap.shutdown()
        conn = http.client.HTTPSConnection("localhost", inst.port("https"), context=ctx, timeout=10)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error):
        # ssl.SSLError, a reset or an EOF where the server refused the certificate.
        return False


def wait_for(check: Callable[[], bool], what: str, deadline: float = CHANGE_DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {deadline}s: {what}")


def everywhere(inst: Instance, who: Client, *, allowed: bool) -> None:
    """Wait until every listener accepts (or refuses) ``who``, then check all at once."""
    for listener in LISTENERS:
        wait_for(
            lambda listener=listener: accepted(inst, listener, who) is allowed,  # type: ignore[misc]
            f"{who.cert.name} {'accepted' if allowed else 'refused'} on {listener}",
        )
    assert {listener: accepted(inst, listener, who) for listener in LISTENERS} == dict.fromkeys(
        LISTENERS, allowed
    )


def admin(inst: Instance, *args: str) -> subprocess.CompletedProcess[str]:
    done = inst.admin(*args)
    assert done.returncode == 0, done.stderr
    return done


def demo(inst: Instance, name: str) -> Client:
    return Client(inst.cert(name), inst.key(name))


def lawyer(pki: DevPki, name: str) -> Client:
    issued = issue_identity(
        pki,
        name,
        role=Role.AVOCAT,
        given_name="Live",
        surname=name,
        address=f"{name}@avocats.palais.test",
    )
    return Client(issued.cert_path, issued.key_path)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    # One gateway for the module: each test uses its own clients, and the
    # anchor a test removes it adds back.
    root = tmp_path_factory.mktemp("live") / "inst"
    inst = create_instance(root, extra_config=LIVE_CONFIG.format(grace=GRACE))
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def test_imported_and_fetched_crls_revoke_without_a_restart(live: Instance) -> None:
    pki = load_dev_pki(live.root / "pki")
    alice = lawyer(pki, "alice")
    everywhere(live, alice, allowed=True)
    pid = live.proc.pid if live.proc else None

    # 1. Revoked by a CRL the operator imports.
    crl = revoke(pki, alice.cert)
    assert "CRL #" in admin(live, "crl", "import", str(crl), "--reason", "lost card").stdout
    everywhere(live, alice, allowed=False)
    everywhere(live, demo(live, "avocat1"), allowed=True)  # the rest of the CA is unaffected

    # 2. Revoked by a CRL fetched from the distribution point its CA names.
    with CrlServer() as crls:
        url = crls.url("/ac-region.crl")
        region = regional_ca(url)
        crls.files["/ac-region.crl"] = region.crl(number=1).public_bytes(Encoding.PEM)
        ca_file = live.root / "ac-region.pem"
        ca_file.write_bytes(region.cert.public_bytes(Encoding.PEM))
        added = admin(live, "trust", "add", "avocats", str(ca_file), "--reason", "new region")
        assert "no http:// CRL" not in added.stdout
        bob = regional_lawyer(region, live.root, "bob")
        everywhere(live, bob, allowed=True)  # its CRL fetched, its clients accepted
        crls.files["/ac-region.crl"] = region.crl([cert_serial(bob)], number=2).public_bytes(
            Encoding.PEM
        )
        everywhere(live, bob, allowed=False)
        assert crls.hits >= 2

        # A replayed older CRL is refused: bob stays revoked.
        crls.files["/ac-region.crl"] = region.crl(number=1).public_bytes(Encoding.PEM)
        time.sleep(1.0)  # several fetch rounds
        assert not accepted(live, "smtps", bob)

    assert live.proc is not None and live.proc.pid == pid  # no restart
    log = live.read_log()
    assert "CRL refused" in log and "not newer" in log
    audit = subprocess.run(
        [sys.executable, "-m", "palais", "admin", "audit", "-d", str(live.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "crl-imported" in audit and "crl-fetched" in audit and "trust-added" in audit
    assert "lost card" in audit


def test_removed_anchor_refused_then_added_back(live: Instance) -> None:
    clerk = demo(live, "greffier1")
    everywhere(live, clerk, allowed=True)
    justice = live.root / "pki" / "anchors" / "justice.pem"
    fingerprint = certbuilder.fingerprint(x509.load_pem_x509_certificate(justice.read_bytes()))
    admin(live, "trust", "remove", fingerprint, "--reason", "test")
    everywhere(live, clerk, allowed=False)
    everywhere(live, demo(live, "avocat1"), allowed=True)
    admin(live, "trust", "add", "justice", str(justice))
    everywhere(live, clerk, allowed=True)  # its CRL, kept by CA, came back with it
    listing = admin(live, "trust", "list", "--all").stdout
    assert fingerprint in listing and "no CRL" not in listing


def test_a_stale_crl_fails_closed_after_the_grace(live: Instance) -> None:
    clerk = demo(live, "greffier1")
    everywhere(live, clerk, allowed=True)
    pki = load_dev_pki(live.root / "pki")
    group = TrustCommunity.JUSTICE
    ca = CertificateAuthority.load(pki.ca_cert_path(group), pki.ca_key_path(group))
    # The import runs in this process (a process of its own took seconds to
    # start): it must be done within the lifetime.
    lifetime = 5
    short = live.root / "justice-short.pem"
    short.write_bytes(
        ca.crl(number=50, lifetime=timedelta(seconds=lifetime)).public_bytes(Encoding.PEM)
    )
    started = time.monotonic()
    status, err = live.admin_here("crl", "import", str(short))
    assert status == 0, err
    # Past nextUpdate, within the grace: still accepted (TLS included).
    time.sleep(max(0.0, lifetime + 2 - (time.monotonic() - started)))
    assert time.monotonic() - started < lifetime + GRACE - 1, "too slow to test the grace"
    assert accepted(live, "smtps", clerk)
    assert accepted(live, "https", clerk)
    # Beyond the grace: refused on every listener.
    everywhere(live, clerk, allowed=False)
    assert time.monotonic() - started >= lifetime + GRACE - 1
    everywhere(live, demo(live, "avocat1"), allowed=True)
    assert live.read_log().count("past its nextUpdate") >= 1
    # A CRL in force again: the CA's clients are back (and the module's
    # gateway is as the other tests expect it).
    fresh = live.root / "justice-fresh.pem"
    fresh.write_bytes(ca.crl(number=51).public_bytes(Encoding.PEM))
    status, err = live.admin_here("crl", "import", str(fresh))
    assert status == 0, err
    everywhere(live, clerk, allowed=True)


# --- a CA publishing its CRL over HTTP -------------------------------------------------


def regional_ca(crl_url: str) -> CertificateAuthority:
    """An extra lawyers' CA whose certificate names ``crl_url`` as its CRL's address."""
    return CertificateAuthority.create(
        certbuilder.name("AC Avocats - Région", organization="CNB", country="FR"),
        crl_url=crl_url,
    )


def regional_lawyer(ca: CertificateAuthority, root: Path, name: str) -> Client:
    subject = certbuilder.name_of(
        [
            (NameOID.COUNTRY_NAME, "FR"),
            (NameOID.ORGANIZATION_NAME, "Barreau de Région"),
            (NameOID.TITLE, "AVOCAT"),
            (NameOID.COMMON_NAME, f"Live {name.upper()}"),
        ]
    )
    issued = ca.issue(subject, profile=certbuilder.CARD, emails=[f"{name}@avocats.palais.test"])
    client = Client(root / f"{name}.pem", root / f"{name}.key")
    issued.write(client.cert, client.key)
    return client


def cert_serial(client: Client) -> int:
    return x509.load_pem_x509_certificate(client.cert.read_bytes()).serial_number
