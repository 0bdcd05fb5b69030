"""From a TLS-verified client certificate to the identity it proves.

TLS has already checked the chain against the union of all anchors; what it
cannot say is *which* community vouched for the holder, and that decides the
role. ``TrustAnchors.identify`` answers that, and re-checks dates and
revocation because a resumed TLS session skips them and because the CRLs
loaded in a long-lived TLS context may be older than the operator's latest.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from palais.mailbox.identity import (
    ROLES_BY_COMMUNITY,
    CertificateIdentity,
    Role,
    TrustCommunity,
)

__all__ = [
    "TITLE_ROLES",
    "CertificateRefused",
    "TrustAnchors",
    "TrustConfigError",
]


class CertificateRefused(Exception):
    """The certificate proves no identity the gateway accepts.

    ``reason`` is meant for the log (it names issuers, serials, dates); the
    protocol edge answers clients with a generic refusal instead.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrustConfigError(ValueError):
    """An anchor or CRL file is unusable; raised at load or reload time."""


#: Card titles and the role each one claims. Which anchor may vouch for which
#: role is ROLES_BY_COMMUNITY's business, not this table's.
TITLE_ROLES: Final[Mapping[str, Role]] = {
    "AVOCAT": Role.AVOCAT,
    "COLLABORATEUR": Role.COLLABORATEUR,
    "GREFFIER": Role.GREFFIER,
    "MAGISTRAT": Role.MAGISTRAT,
    "ADMINISTRATEUR": Role.ADMIN,
    "JURIDICTION": Role.COURT_SYSTEM,
}

# Communities whose certificates name a single kind of holder: the title is
# optional there (court system certificates carry none).
_IMPLIED_ROLE: Final[Mapping[TrustCommunity, Role]] = {
    TrustCommunity.COURT_SYSTEMS: Role.COURT_SYSTEM,
    TrustCommunity.ADMIN: Role.ADMIN,
}

# The address ends up in SMTP envelopes and headers: anything that could
# break out of an addr-spec is refused rather than escaped.
_ADDRESS_RE: Final = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")

_DEFAULT_CACHE_SIZE: Final = 4096

# RFC 4519 short names, so that logged subjects read "title=AVOCAT" rather
# than "2.5.4.12=AVOCAT".
_NAME_LABELS: Final = {
    NameOID.TITLE: "title",
    NameOID.SURNAME: "sn",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.SERIAL_NUMBER: "serialNumber",
}

_SIGNING_KEYS: Final = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    dsa.DSAPublicKey,
)


@dataclass(frozen=True, slots=True)
class _Anchor:
    group: TrustCommunity
    cert: x509.Certificate
    label: str  # the anchor's subject, for log reasons
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class _Revocations:
    revoked: frozenset[int]
    next_update: datetime
    source: Path


@dataclass(frozen=True, slots=True)
class _Verified:
    """What the expensive part of identify() established, safe to cache.

    Everything here depends only on the certificate bytes and the anchor
    set; time and revocation are re-checked on every call.
    """

    identity: CertificateIdentity
    anchor: _Anchor
    serial: int
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_issuer: Mapping[x509.Name, tuple[_Anchor, ...]]
    revocations: Mapping[int, _Revocations]  # keyed by id() of the _Anchor


class TrustAnchors:
    """The client-trusted CAs, one or more per community, and their CRLs.

    Files are read once and parsed results cached; ``reload()`` re-reads the
    same paths after an operator replaced a CRL or an anchor, atomically: on
    error the previous state stays in force.
    """

    def __init__(
        self,
        anchors: Mapping[TrustCommunity, Path],
        crls: Sequence[Path],
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        self._anchor_paths = {TrustCommunity(group): Path(p) for group, p in anchors.items()}
        self._crl_paths = tuple(Path(p) for p in crls)
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._snapshot = _load(self._anchor_paths, self._crl_paths)

    @property
    def anchor_paths(self) -> tuple[Path, ...]:
        """The anchor files, in the shape server_context() takes them."""
        return tuple(self._anchor_paths.values())

    @property
    def crl_paths(self) -> tuple[Path, ...]:
        return self._crl_paths

    def reload(self) -> None:
        snapshot = _load(self._anchor_paths, self._crl_paths)
        with self._lock:
            self._snapshot = snapshot
            self._cache.clear()

    def identify(self, der: bytes, *, now: datetime | None = None) -> CertificateIdentity:
        """The identity a client certificate (DER) proves, or CertificateRefused."""
        when = now if now is not None else datetime.now(UTC)
        fingerprint = hashlib.sha256(der).hexdigest()
        with self._lock:
            snapshot = self._snapshot
            verified = self._cache.get(fingerprint)
            if verified is not None:
                self._cache.move_to_end(fingerprint)
        if verified is None:
            verified = _verify(der, fingerprint, snapshot)
            with self._lock:
                # A reload in between made this result stale: do not cache it
                # into the new generation (it is still correct to return,
                # having been checked against the anchors in force at call time).
                if snapshot is self._snapshot:
                    self._cache[fingerprint] = verified
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        _check_time_and_revocation(verified, snapshot, when)
        return verified.identity


def _load(anchor_paths: Mapping[TrustCommunity, Path], crl_paths: Sequence[Path]) -> _Snapshot:
    anchors: list[_Anchor] = []
    for group, path in anchor_paths.items():
        for cert in _read_certificates(path):
            _check_is_ca(cert, path)
            anchors.append(
                _Anchor(
                    group=group,
                    cert=cert,
                    label=cert.subject.rfc4514_string(_NAME_LABELS),
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                )
            )
    if not anchors:
        raise TrustConfigError("no trust anchors configured")
    seen: dict[bytes, _Anchor] = {}
    for anchor in anchors:
        spki = anchor.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        other = seen.get(spki)
        if other is not None and other.group is not anchor.group:
            # One key vouching for two communities would make the role depend
            # on load order.
            raise TrustConfigError(
                f"anchor {anchor.label} is configured for both {other.group} and {anchor.group}"
            )
        seen[spki] = anchor

    by_issuer: dict[x509.Name, tuple[_Anchor, ...]] = {}
    for anchor in anchors:
        by_issuer[anchor.cert.subject] = (
            *by_issuer.get(anchor.cert.subject, ()),
            anchor,
        )

    latest: dict[int, tuple[x509.CertificateRevocationList, Path]] = {}
    for path in crl_paths:
        crl = _read_crl(path)
        issuer = _crl_issuer(crl, by_issuer.get(crl.issuer, ()))
        if issuer is None:
            issuer_name = crl.issuer.rfc4514_string(_NAME_LABELS)
            raise TrustConfigError(
                f"CRL {path} ({issuer_name}) is not signed by a configured anchor"
            )
        current = latest.get(id(issuer))
        if current is None or crl.last_update_utc > current[0].last_update_utc:
            latest[id(issuer)] = (crl, path)

    revocations: dict[int, _Revocations] = {}
    for anchor in anchors:
        found = latest.get(id(anchor))
        if found is None:
            # The TLS layer fails closed for a CA without a CRL; refusing to
            # start says so once instead of on every connection.
            raise TrustConfigError(f"no CRL configured for anchor {anchor.label}")
        crl, path = found
        next_update = crl.next_update_utc
        if next_update is None:
            raise TrustConfigError(f"CRL {path} has no nextUpdate")
        revocations[id(anchor)] = _Revocations(
            revoked=frozenset(entry.serial_number for entry in crl),
            next_update=next_update,
            source=path,
        )
    return _Snapshot(by_issuer=by_issuer, revocations=revocations)


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except OSError as exc:
        raise TrustConfigError(f"cannot read anchor file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise TrustConfigError(f"anchor file {path} holds no valid certificate") from exc


def _read_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        data = path.read_bytes()
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except OSError as exc:
        raise TrustConfigError(f"cannot read CRL {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise TrustConfigError(f"{path} is not a valid CRL") from exc


def _check_is_ca(cert: x509.Certificate, path: Path) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TrustConfigError(
            f"{path}: {cert.subject.rfc4514_string(_NAME_LABELS)} is not a CA certificate"
        )


def _crl_issuer(
    crl: x509.CertificateRevocationList, candidates: Sequence[_Anchor]
) -> _Anchor | None:
    for anchor in candidates:
        key = anchor.cert.public_key()
        # Only signature-capable keys can have signed a CRL (not X25519, DH...).
        if isinstance(key, _SIGNING_KEYS) and crl.is_signature_valid(key):
            return anchor
    return None


def _verify(der: bytes, fingerprint: str, snapshot: _Snapshot) -> _Verified:
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
    except ValueError as exc:
        raise CertificateRefused("malformed certificate") from exc

    issuer = cert.issuer.rfc4514_string(_NAME_LABELS)
    anchor = None
    for candidate in snapshot.by_issuer.get(cert.issuer, ()):
        try:
            cert.verify_directly_issued_by(candidate.cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        anchor = candidate
        break
    if anchor is None:
        raise CertificateRefused(f"not issued by a trust anchor (issuer {issuer})")

    for extension in extensions:
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise CertificateRefused(f"unknown critical extension {extension.oid.dotted_string}")
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise CertificateRefused("a CA certificate cannot be a client")
    usage = _extension(extensions, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise CertificateRefused("keyUsage lacks digitalSignature")
    purposes = _extension(extensions, x509.ExtendedKeyUsage)
    if purposes is not None and not (
        ExtendedKeyUsageOID.CLIENT_AUTH in purposes
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in purposes
    ):
        raise CertificateRefused("extendedKeyUsage lacks clientAuth")

    role = _role(cert.subject, anchor.group)
    address = _address(extensions)
    display_name = _single(cert.subject, NameOID.COMMON_NAME) or address
    serial_number = _single(cert.subject, NameOID.SERIAL_NUMBER)
    for label, value in (("commonName", display_name), ("serialNumber", serial_number)):
        # These reach logs and mail headers; a control character there is an
        # injection attempt, not a spelling.
        if value is not None and _CONTROL_RE.search(value):
            raise CertificateRefused(f"control character in subject {label}")

    identity = CertificateIdentity(
        role=role,
        address=address,
        display_name=display_name,
        fingerprint=fingerprint,
        subject=cert.subject.rfc4514_string(_NAME_LABELS),
        serial_number=serial_number,
    )
    return _Verified(
        identity=identity,
        anchor=anchor,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def _check_time_and_revocation(verified: _Verified, snapshot: _Snapshot, now: datetime) -> None:
    anchor = verified.anchor
    if not anchor.not_before <= now <= anchor.not_after:
        raise CertificateRefused(f"trust anchor {anchor.label} is outside its validity period")
    if now < verified.not_before:
        raise CertificateRefused(f"certificate not valid before {verified.not_before.isoformat()}")
    if now > verified.not_after:
        raise CertificateRefused(f"certificate expired on {verified.not_after.isoformat()}")
    revocations = snapshot.revocations[id(anchor)]
    if now > revocations.next_update:
        # A stale CRL may be missing recent revocations: fail closed, as
        # OpenSSL does.
        raise CertificateRefused(
            f"CRL {revocations.source} for {anchor.label} expired on "
            f"{revocations.next_update.isoformat()}"
        )
    if verified.serial in revocations.revoked:
        raise CertificateRefused(
            f"certificate serial {verified.serial:x} revoked by {anchor.label}"
        )


def _role(subject: x509.Name, group: TrustCommunity) -> Role:
    title = _single(subject, NameOID.TITLE)
    if title is None:
        implied = _IMPLIED_ROLE.get(group)
        if implied is None:
            raise CertificateRefused(f"no title in a certificate from the {group} anchor")
        return implied
    role = TITLE_ROLES.get(title.strip().upper())
    if role is None:
        raise CertificateRefused(f"unknown title {title!r}")
    if role not in ROLES_BY_COMMUNITY[group]:
        raise CertificateRefused(f"title {title!r} is not allowed for the {group} anchor")
    return role


def _address(extensions: x509.Extensions) -> str:
    names = _extension(extensions, x509.SubjectAlternativeName)
    emails = names.get_values_for_type(x509.RFC822Name) if names is not None else []
    if not emails:
        raise CertificateRefused("no e-mail address (rfc822Name) in subjectAltName")
    if len(emails) > 1:
        # Which mailbox would be the holder's? Refuse rather than guess.
        raise CertificateRefused("several e-mail addresses in subjectAltName")
    address = emails[0].lower()
    if not _ADDRESS_RE.fullmatch(address):
        raise CertificateRefused("subjectAltName e-mail address is not a plain addr-spec")
    return address


def _single(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    if len(values) > 1:
        # Two titles or two common names: which one is the holder? Refuse.
        raise CertificateRefused(f"several {oid.dotted_string} attributes in subject")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
