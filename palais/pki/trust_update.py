"""Checking trust material before it is put in force, and fetching CRLs.

Pure functions on bytes (CA certificates and CRLs as PEM or DER), so that
``palais admin trust add``, ``palais admin crl import`` and the scheduled
fetch all decide alike; the store only carries out what passed. A CRL
replaces the one in force only if its CA signed it, it names that CA as
issuer, its dates make sense and it is newer (never an older cRLNumber):
a replayed old CRL would silently un-revoke certificates.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from palais.mailbox.identity import TrustCommunity

__all__ = [
    "MAX_CRL_BYTES",
    "CaInfo",
    "CheckedCrl",
    "CrlRejected",
    "CrlUnchanged",
    "TrustRejected",
    "check_crl",
    "community",
    "crl_issuer",
    "crl_urls",
    "describe_ca",
    "fetch_crl",
    "issued_by",
    "periodically",
]

log = logging.getLogger("palais.trust")

#: A CRL larger than this is refused unread (a CA's full CRL is well below).
MAX_CRL_BYTES: Final = 16 * 1024 * 1024
# Clocks differ: a CRL issued "in the future" by this much is still taken.
_CLOCK_SKEW: Final = timedelta(minutes=5)
_SIGNING_KEYS: Final = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    dsa.DSAPublicKey,
)


class TrustRejected(ValueError):
    """A CA certificate the gateway will not trust; the text is for the operator."""


class CrlRejected(ValueError):
    """A CRL that must not replace the one in force; the text is for the operator and the log."""


class CrlUnchanged(CrlRejected):
    """The very CRL already in force (a fetch found nothing new): not an error."""


@dataclass(frozen=True, slots=True)
class CaInfo:
    """What the store keeps of a CA certificate, and where its CRL is published."""

    fingerprint: str  # SHA-256 of the DER, lower-case hex
    subject: str
    pem: bytes
    self_issued: bool
    crl_urls: tuple[str, ...]
    cert: x509.Certificate


@dataclass(frozen=True, slots=True)
class CheckedCrl:
    """A CRL that passed :func:`check_crl`, with what the store records of it."""

    pem: bytes
    number: int | None
    this_update: datetime
    next_update: datetime
    revoked: frozenset[int]


def describe_ca(data: bytes) -> CaInfo:
    """One CA certificate (PEM or DER), or TrustRejected saying why not."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise TrustRejected("not a certificate (PEM or DER)") from exc
    if len(certs) != 1:
        # One row per CA keeps add/remove and the audit trail one-to-one.
        raise TrustRejected(f"{len(certs)} certificates: add them one at a time")
    cert = certs[0]
    subject = cert.subject.rfc4514_string()
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError as exc:
        raise TrustRejected(f"{subject}: malformed extensions") from exc
    if constraints is None or not constraints.ca:
        raise TrustRejected(f"{subject} is not a CA certificate")
    usage = _key_usage(cert)
    if usage is not None and not usage.key_cert_sign:
        raise TrustRejected(f"{subject} may not sign certificates (keyUsage)")
    self_issued = cert.subject == cert.issuer and _signed_by(cert, cert)
    return CaInfo(
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        subject=subject,
        pem=cert.public_bytes(serialization.Encoding.PEM),
        self_issued=self_issued,
        crl_urls=crl_urls(cert),
        cert=cert,
    )


def issued_by(child: CaInfo, parents: Sequence[CaInfo]) -> CaInfo | None:
    """The CA among ``parents`` that signed ``child`` (an intermediate's anchor)."""
    for parent in parents:
        if child.cert.issuer == parent.cert.subject and _signed_by(child.cert, parent.cert):
            return parent
    return None


def crl_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The http:// CRL distribution points a CA certificate names.

    Only plain HTTP: a CRL is signed, so TLS adds nothing, and an https://
    URL would need trust of its own (RFC 5280 section 4.2.1.13 allows
    ldap:// too, which the gateway does not speak).
    """
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    urls: list[str] = []
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                "http://"
            ):
                urls.append(name.value)
    return tuple(urls)


def crl_issuer(data: bytes, cas: Sequence[CaInfo]) -> CaInfo:
    """The CA among ``cas`` that issued and signed this CRL, or CrlRejected."""
    crl = _parse_crl(data)
    for ca in cas:
        if crl.issuer == ca.cert.subject and _crl_signed_by(crl, ca.cert):
            return ca
    raise CrlRejected(f"CRL of {crl.issuer.rfc4514_string()} is not signed by a CA in use")


def check_crl(
    data: bytes,
    ca: CaInfo,
    *,
    current_number: int | None,
    current_this_update: datetime | None,
    now: datetime,
    allow_stale: bool = False,
) -> CheckedCrl:
    """``data`` (PEM or DER) if it may replace the CRL in force for ``ca``.

    ``current_*`` describe the CRL in force (None: there is none). Raises
    CrlUnchanged for the same CRL again, CrlRejected for anything else.
    ``allow_stale`` takes a CRL already past its nextUpdate (seeding from the
    [trust] files: better a stale CRL, refused after its grace, than none).
    """
    crl = _parse_crl(data)
    if crl.issuer != ca.cert.subject:
        raise CrlRejected(f"CRL issuer {crl.issuer.rfc4514_string()} is not the CA {ca.subject}")
    usage = _key_usage(ca.cert)
    if usage is not None and not usage.crl_sign:
        raise CrlRejected(f"{ca.subject} may not sign CRLs (keyUsage)")
    if not _crl_signed_by(crl, ca.cert):
        raise CrlRejected(f"CRL signature does not verify with the key of {ca.subject}")
    for extension in crl.extensions:
        if isinstance(extension.value, x509.DeltaCRLIndicator):
            # A delta lists changes only: in force alone, it would un-revoke.
            raise CrlRejected("a delta CRL cannot replace a full CRL")
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise CrlRejected(f"unknown critical CRL extension {extension.oid.dotted_string}")
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlRejected("CRL without nextUpdate: nobody could tell when it went stale")
    if next_update <= this_update:
        raise CrlRejected("CRL nextUpdate is not after its thisUpdate")
    if this_update > now + _CLOCK_SKEW:
        raise CrlRejected(f"CRL thisUpdate {this_update.isoformat()} is in the future")
    if next_update < now and not allow_stale:
        raise CrlRejected(f"CRL already stale: nextUpdate {next_update.isoformat()} has passed")
    number = _crl_number(crl)
    if current_this_update is not None:
        if number is not None and current_number is not None:
            if number == current_number and this_update == current_this_update:
                raise CrlUnchanged(f"CRL number {number} is already in force")
            if number <= current_number:
                raise CrlRejected(
                    f"CRL number {number} is not newer than {current_number} in force"
                )
        elif current_number is not None:
            # Once a CA numbers its CRLs, one without a number cannot be ordered.
            raise CrlRejected(f"CRL without cRLNumber after number {current_number}")
        if this_update < current_this_update:
            raise CrlRejected(
                f"CRL thisUpdate {this_update.isoformat()} is older than the one in force"
            )
        if this_update == current_this_update and number is None:
            raise CrlUnchanged("CRL with the same thisUpdate is already in force")
    return CheckedCrl(
        pem=crl.public_bytes(serialization.Encoding.PEM),
        number=number,
        this_update=this_update,
        next_update=next_update,
        revoked=frozenset(entry.serial_number for entry in crl),
    )


def fetch_crl(url: str, *, timeout: float, max_bytes: int = MAX_CRL_BYTES) -> bytes:
    """GET one CRL over plain HTTP; OSError (URLError is one) on any failure.

    Redirects are followed only to other http:// URLs (urllib's handler
    would also go to ftp://); proxies come from the environment, as a
    server's outbound HTTP usually must.
    """
    if not url.startswith("http://"):
        raise OSError(f"not an http:// URL: {url}")
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    with opener.open(url, timeout=timeout) as response:
        data: bytes = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"{url}: CRL larger than {max_bytes} bytes")
    return data


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.startswith("http://"):
            raise urllib.error.URLError(f"redirect to a non-http URL: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


async def periodically(
    interval: float,
    work: Callable[[], object],
    *,
    name: str,
) -> None:
    """Run blocking ``work`` in a thread every ``interval`` seconds, forever.

    A failing round is logged and the schedule goes on: one unreachable
    distribution point must not stop the others' next fetch. Cancel the
    task to stop.
    """
    while True:
        try:
            await asyncio.to_thread(work)
        except Exception:
            log.exception("%s failed; next attempt in %.0fs", name, interval)
        await asyncio.sleep(interval)


def _parse_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlRejected("not a CRL (PEM or DER)") from exc


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    # Only signature-capable keys can have signed a CRL (not X25519, DH...).
    return isinstance(key, _SIGNING_KEYS) and crl.is_signature_valid(key)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def community(value: str) -> TrustCommunity:
    """A community by its stored or typed name, or TrustRejected."""
    try:
        return TrustCommunity(value)
    except ValueError as exc:
        names = ", ".join(c.value for c in TrustCommunity)
        raise TrustRejected(f"unknown community {value!r} (one of {names})") from exc
