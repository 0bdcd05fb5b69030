"""From a TLS-verified client certificate to the identity it proves.

TLS has already checked the chain against the union of all anchors; what it
cannot say is *which* community vouched for the holder, and that decides the
role. ``TrustAnchors.identify`` answers that, and re-checks dates and
revocation because a resumed TLS session skips them and because the CRLs
loaded in a long-lived TLS context may be older than the operator's latest.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
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
    "TrustedCa",
]

_log = logging.getLogger("palais.trust")


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
class TrustedCa:
    """A CA certificate as the operator stored it: which community it vouches
    for, and whether it is an anchor or an intermediate under one."""

    community: TrustCommunity
    pem: bytes
    intermediate: bool = False


@dataclass(frozen=True, slots=True)
class _Anchor:
    group: TrustCommunity
    cert: x509.Certificate
    label: str  # the anchor's subject, for log reasons
    not_before: datetime
    not_after: datetime
    parent: _Anchor | None = None  # the CA above an intermediate
    fingerprint: str = ""  # SHA-256 of the DER, as trust_anchor.fingerprint


@dataclass(frozen=True, slots=True)
class _Revocations:
    revoked: frozenset[int]
    next_update: datetime
    source: str
    crl: x509.CertificateRevocationList


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
    anchors: tuple[_Anchor, ...] = ()
    problems: tuple[str, ...] = ()


class TrustAnchors:
    """The client-trusted CAs, one or more per community, and their CRLs.

    Built from files (``palais.toml`` [trust]) or from stored PEM data
    (:meth:`from_pem`, what the database holds). Parsed results are cached;
    ``reload()`` re-reads the same files after an operator replaced a CRL or
    an anchor, atomically: on error the previous state stays in force.

    A CRL past its nextUpdate is still used for ``crl_grace`` (a warning is
    logged once), then every client of its CA is refused: fail closed.
    """

    def __init__(
        self,
        anchors: Mapping[TrustCommunity, Path],
        crls: Sequence[Path],
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
        crl_grace: timedelta = timedelta(0),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._setup(anchors, crls, cache_size, crl_grace, clock)
        self._snapshot = _load(self._anchor_paths, self._crl_paths)

    def _setup(
        self,
        anchors: Mapping[TrustCommunity, Path],
        crls: Sequence[Path],
        cache_size: int,
        crl_grace: timedelta,
        clock: Callable[[], datetime] | None,
    ) -> None:
        self._anchor_paths = {TrustCommunity(group): Path(p) for group, p in anchors.items()}
        self._crl_paths = tuple(Path(p) for p in crls)
        self._cache_size = cache_size
        self._crl_grace = crl_grace
        self._clock = clock if clock is not None else _utcnow
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._warned: set[tuple[str, datetime]] = set()

    @classmethod
    def from_pem(
        cls,
        cas: Sequence[TrustedCa],
        crls: Sequence[tuple[str, bytes]],
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
        crl_grace: timedelta = timedelta(0),
        clock: Callable[[], datetime] | None = None,
    ) -> TrustAnchors:
        """Anchors from stored data: CA certificates and (source, CRL) pairs.

        Unlike the file constructor, which refuses to start on any doubt,
        this one is lenient per CA and fails closed: an unusable CA is left
        out, a CA without a usable CRL has its clients refused, and
        ``problems`` says why. One bad row must not keep an operator's
        removal or a new CRL from taking effect for everyone else.
        """
        self = cls.__new__(cls)
        self._setup({}, (), cache_size, crl_grace, clock)
        self._snapshot = _build_from_pem(cas, crls)
        return self

    @property
    def anchor_paths(self) -> tuple[Path, ...]:
        """The anchor files, in the shape server_context() takes them."""
        return tuple(self._anchor_paths.values())

    @property
    def crl_paths(self) -> tuple[Path, ...]:
        return self._crl_paths

    @property
    def problems(self) -> tuple[str, ...]:
        """Why stored CAs or CRLs were left out (from_pem only), for the log."""
        return self._current().problems

    def ca_pems(self, communities: Iterable[TrustCommunity] | None = None) -> list[bytes]:
        """The PEM of every CA in use (of ``communities``), for a TLS context."""
        wanted = None if communities is None else frozenset(communities)
        return [
            a.cert.public_bytes(serialization.Encoding.PEM)
            for a in self._current().anchors
            if wanted is None or a.group in wanted
        ]

    def crl_pems(self) -> list[bytes]:
        """The PEM of every CRL in force, for a TLS context."""
        return [
            r.crl.public_bytes(serialization.Encoding.PEM)
            for r in self._current().revocations.values()
        ]

    def stale_crls(self, now: datetime | None = None) -> tuple[frozenset[str], frozenset[str]]:
        """(CAs whose CRL is past nextUpdate but within the grace, CAs beyond it).

        The TLS layer cannot apply a grace itself (OpenSSL refuses a CRL past
        nextUpdate at once), so the listeners' contexts are rebuilt when the
        first set changes; see palais.pki.tls.server_context_from_pem.
        """
        when = now if now is not None else self._clock()
        snapshot = self._current()
        grace, beyond = set(), set()
        for anchor in snapshot.anchors:
            revocations = snapshot.revocations.get(id(anchor))
            if revocations is None or when <= revocations.next_update:
                continue
            if when <= revocations.next_update + self._crl_grace:
                grace.add(anchor.fingerprint)
            else:
                beyond.add(anchor.fingerprint)
        return frozenset(grace), frozenset(beyond)

    def reload(self) -> None:
        snapshot = _load(self._anchor_paths, self._crl_paths)
        with self._lock:
            self._snapshot = snapshot
            self._cache.clear()

    def _current(self) -> _Snapshot:
        return self._snapshot

    def identify(self, der: bytes, *, now: datetime | None = None) -> CertificateIdentity:
        """The identity a client certificate (DER) proves, or CertificateRefused."""
        when = now if now is not None else self._clock()
        fingerprint = hashlib.sha256(der).hexdigest()
        with self._lock:
            snapshot = self._current()
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
        _check_time_and_revocation(verified, snapshot, when, self._crl_grace, self._warn_stale)
        return verified.identity

    def _warn_stale(self, anchor: _Anchor, revocations: _Revocations) -> None:
        key = (anchor.fingerprint, revocations.next_update)
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        _log.warning(
            "CRL %s for %s is past its nextUpdate (%s): still used during the grace of %ds",
            revocations.source,
            anchor.label,
            revocations.next_update.isoformat(),
            int(self._crl_grace.total_seconds()),
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _load(anchor_paths: Mapping[TrustCommunity, Path], crl_paths: Sequence[Path]) -> _Snapshot:
    """From files: strict, any doubt is a TrustConfigError (refuse to start)."""
    anchors: list[_Anchor] = []
    for group, path in anchor_paths.items():
        for cert in _read_certificates(path):
            _check_is_ca(cert, str(path))
            anchors.append(_anchor(group, cert))
    if not anchors:
        raise TrustConfigError("no trust anchors configured")
    seen: dict[bytes, _Anchor] = {}
    for anchor in anchors:
        other = seen.get(_spki(anchor.cert))
        if other is not None and other.group is not anchor.group:
            # One key vouching for two communities would make the role depend
            # on load order.
            raise TrustConfigError(
                f"anchor {anchor.label} is configured for both {other.group} and {anchor.group}"
            )
        seen[_spki(anchor.cert)] = anchor
    by_issuer = _by_subject(anchors)

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
        revocations[id(anchor)] = _revocations(crl, next_update, str(path))
    return _Snapshot(by_issuer=by_issuer, revocations=revocations, anchors=tuple(anchors))


def _build_from_pem(cas: Sequence[TrustedCa], crls: Sequence[tuple[str, bytes]]) -> _Snapshot:
    """From stored data: lenient per CA, failing closed (see TrustAnchors.from_pem)."""
    problems: list[str] = []
    parsed: list[tuple[TrustedCa, x509.Certificate]] = []
    for ca in cas:
        try:
            (cert,) = x509.load_pem_x509_certificates(ca.pem)
            _check_is_ca(cert, f"stored {ca.community} CA")
        except (ValueError, TrustConfigError) as exc:
            problems.append(f"stored {ca.community} CA left out: {exc}")
            continue
        parsed.append((ca, cert))
    # A key stored for two communities: both left out, the role would
    # otherwise depend on row order.
    groups: dict[bytes, set[TrustCommunity]] = {}
    for ca, cert in parsed:
        groups.setdefault(_spki(cert), set()).add(ca.community)
    roots: list[_Anchor] = []
    pending: list[tuple[TrustCommunity, x509.Certificate]] = []
    for ca, cert in parsed:
        if len(groups[_spki(cert)]) > 1:
            problems.append(f"CA {_label(cert)} left out: stored for several communities")
        elif ca.intermediate:
            pending.append((ca.community, cert))
        else:
            roots.append(_anchor(ca.community, cert))
    anchors = list(roots)
    # Intermediates hang under a CA of their own community, possibly another
    # intermediate: attach level by level until nothing more attaches.
    while pending:
        by_subject = _by_subject(anchors)
        left: list[tuple[TrustCommunity, x509.Certificate]] = []
        for group, cert in pending:
            parent = _parent(cert, group, by_subject.get(cert.issuer, ()))
            if parent is None:
                left.append((group, cert))
            else:
                anchors.append(_anchor(group, cert, parent))
        if len(left) == len(pending):
            problems.extend(
                f"intermediate {_label(cert)} left out: no {group} CA above it"
                for group, cert in left
            )
            break
        pending = left
    by_issuer = _by_subject(anchors)

    latest: dict[int, tuple[x509.CertificateRevocationList, str]] = {}
    for source, data in crls:
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_crl(data)
            )
        except ValueError:
            problems.append(f"CRL {source} left out: not a valid CRL")
            continue
        issuer = _crl_issuer(crl, by_issuer.get(crl.issuer, ()))
        if issuer is None:
            problems.append(f"CRL {source} left out: not signed by a CA in use")
            continue
        if crl.next_update_utc is None:
            problems.append(f"CRL {source} left out: no nextUpdate")
            continue
        current = latest.get(id(issuer))
        if current is None or crl.last_update_utc > current[0].last_update_utc:
            latest[id(issuer)] = (crl, source)
    revocations: dict[int, _Revocations] = {}
    for anchor in anchors:
        found = latest.get(id(anchor))
        if found is None:
            # Its clients are refused (here and by OpenSSL), not trusted blindly.
            problems.append(f"no CRL in force for {anchor.label}: its clients are refused")
            continue
        crl, source = found
        assert crl.next_update_utc is not None  # checked above
        revocations[id(anchor)] = _revocations(crl, crl.next_update_utc, source)
    return _Snapshot(
        by_issuer=by_issuer,
        revocations=revocations,
        anchors=tuple(anchors),
        problems=tuple(problems),
    )


def _anchor(
    group: TrustCommunity, cert: x509.Certificate, parent: _Anchor | None = None
) -> _Anchor:
    return _Anchor(
        group=group,
        cert=cert,
        label=_label(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        parent=parent,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


def _revocations(
    crl: x509.CertificateRevocationList, next_update: datetime, source: str
) -> _Revocations:
    return _Revocations(
        revoked=frozenset(entry.serial_number for entry in crl),
        next_update=next_update,
        source=source,
        crl=crl,
    )


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string(_NAME_LABELS)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _by_subject(anchors: Sequence[_Anchor]) -> dict[x509.Name, tuple[_Anchor, ...]]:
    by_issuer: dict[x509.Name, tuple[_Anchor, ...]] = {}
    for anchor in anchors:
        by_issuer[anchor.cert.subject] = (*by_issuer.get(anchor.cert.subject, ()), anchor)
    return by_issuer


def _parent(
    cert: x509.Certificate, group: TrustCommunity, candidates: Sequence[_Anchor]
) -> _Anchor | None:
    for candidate in candidates:
        if candidate.group is not group:
            continue  # an intermediate vouches for its own community only
        try:
            cert.verify_directly_issued_by(candidate.cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


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


def _check_is_ca(cert: x509.Certificate, path: str) -> None:
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


def _check_time_and_revocation(
    verified: _Verified,
    snapshot: _Snapshot,
    now: datetime,
    grace: timedelta,
    warn_stale: Callable[[_Anchor, _Revocations], None],
) -> None:
    if now < verified.not_before:
        raise CertificateRefused(f"certificate not valid before {verified.not_before.isoformat()}")
    if now > verified.not_after:
        raise CertificateRefused(f"certificate expired on {verified.not_after.isoformat()}")
    serial: int | None = verified.serial
    anchor: _Anchor | None = verified.anchor
    # Up the chain: each CA's validity, and each certificate against its
    # issuer's CRL (the leaf's CRL is mandatory; an intermediate is checked
    # against its anchor's CRL when there is one, as OpenSSL's leaf-only
    # check would not).
    while anchor is not None:
        if not anchor.not_before <= now <= anchor.not_after:
            raise CertificateRefused(f"trust anchor {anchor.label} is outside its validity period")
        revocations = snapshot.revocations.get(id(anchor))
        if revocations is None:
            if serial == verified.serial:
                raise CertificateRefused(f"no CRL in force for {anchor.label}")
        else:
            if now > revocations.next_update:
                # A stale CRL may be missing recent revocations: fail closed
                # once the grace is over, as OpenSSL does at once.
                if now > revocations.next_update + grace:
                    raise CertificateRefused(
                        f"CRL {revocations.source} for {anchor.label} expired on "
                        f"{revocations.next_update.isoformat()}"
                    )
                warn_stale(anchor, revocations)
            if serial is not None and serial in revocations.revoked:
                raise CertificateRefused(f"certificate serial {serial:x} revoked by {anchor.label}")
        serial = anchor.cert.serial_number
        anchor = anchor.parent


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
