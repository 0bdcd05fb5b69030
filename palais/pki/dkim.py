"""DKIM for mail that leaves the gateway, and the check of court systems' mail.

Receipts sent to other systems and messages relayed to court systems carry
two DKIM signatures (RFC 6376), made with dkimpy: ed25519-sha256 (RFC 8463)
first, then rsa-sha256 for the verifiers that do not know Ed25519 yet.
Each is valid on its own, so a receiver needs only one algorithm.

Keys are PEM files (PKCS#8, mode 0600) in one directory, named by their
selectors; ``generate_dkim_keys`` also writes ``dkim-dns.txt``, the TXT
records to publish before the keys are used. Signing (``sign_outgoing``)
and checking (``verify_incoming``) are separate roles.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path
from typing import Final

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from palais.pki.certbuilder import atomic_write

__all__ = [
    "DNS_RECORDS_FILE",
    "SIGNED_HEADERS",
    "DkimKeys",
    "generate_dkim_keys",
    "sign_outgoing",
    "verify_incoming",
]

DNS_RECORDS_FILE: Final = "dkim-dns.txt"

#: The header fields both signatures cover. A field absent from the message
#: is signed as absent, so that no relay can add it (a Cc, say).
SIGNED_HEADERS: Final = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
)
# Each is listed twice in h=: the second, empty, instance forbids adding
# another above it (RFC 6376 §8.15). A reader shown a forged Subject or From
# prepended to a signed message would otherwise see a passing signature.
_H_TAG: Final = tuple(h.lower().encode() for h in SIGNED_HEADERS) * 2

_RELAXED: Final = (b"relaxed", b"relaxed")
_RSA_BITS: Final = 2048


@dataclass(frozen=True)
class DkimKeys:
    """The gateway's two DKIM keys for one signing domain."""

    domain: str
    ed25519_selector: str
    ed25519_key: ed25519.Ed25519PrivateKey
    rsa_selector: str
    rsa_key: rsa.RSAPrivateKey

    @classmethod
    def load(cls, directory: Path, domain: str, selector_prefix: str) -> DkimKeys:
        """The keys ``generate_dkim_keys`` wrote under ``directory`` for this prefix."""
        ed_selector, rsa_selector = _selectors(selector_prefix)
        ed_key = _load(directory / _key_file(ed_selector))
        rsa_key = _load(directory / _key_file(rsa_selector))
        if not isinstance(ed_key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{directory / _key_file(ed_selector)} is not an Ed25519 key")
        if not isinstance(rsa_key, rsa.RSAPrivateKey) or rsa_key.key_size < _RSA_BITS:
            raise ValueError(
                f"{directory / _key_file(rsa_selector)} is not an RSA key of {_RSA_BITS} bits"
            )
        return cls(domain, ed_selector, ed_key, rsa_selector, rsa_key)

    def dns_records(self) -> dict[str, str]:
        """Fully qualified record name -> TXT value, for each selector."""
        ed_public = self.ed25519_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        rsa_public = self.rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            self._record_name(self.ed25519_selector): _txt("ed25519", ed_public),
            self._record_name(self.rsa_selector): _txt("rsa", rsa_public),
        }

    def _record_name(self, selector: str) -> str:
        return f"{selector}._domainkey.{self.domain.rstrip('.')}."


def generate_dkim_keys(directory: Path, domain: str, selector_prefix: str) -> DkimKeys:
    """New Ed25519 and RSA-2048 keys under ``directory`` (0600), and ``dkim-dns.txt``.

    Refuses to replace the keys of an existing selector: their public halves
    may be published, and mail signed with a replaced key fails until DNS
    catches up. Rotating means a new prefix.
    """
    ed_selector, rsa_selector = _selectors(selector_prefix)
    for selector in (ed_selector, rsa_selector):
        if (directory / _key_file(selector)).exists():
            raise FileExistsError(f"{directory / _key_file(selector)} exists: use a new prefix")
    keys = DkimKeys(
        domain.rstrip(".").lower(),
        ed_selector,
        ed25519.Ed25519PrivateKey.generate(),
        rsa_selector,
        rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS),
    )
    for selector, key in ((ed_selector, keys.ed25519_key), (rsa_selector, keys.rsa_key)):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(directory / _key_file(selector), pem, 0o600)
    atomic_write(directory / DNS_RECORDS_FILE, _zone(keys).encode("ascii"), 0o644)
    return keys


def sign_outgoing(message: bytes, keys: DkimKeys) -> bytes:
    """``message`` with an ed25519-sha256 then an rsa-sha256 DKIM-Signature prepended.

    Both are relaxed/relaxed (relays that re-fold headers or trim trailing
    spaces keep them valid) and cover ``SIGNED_HEADERS``. The new fields use
    the message's own line endings.
    """
    linesep = b"\r\n" if message.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    domain = keys.domain.encode("ascii")
    ed_seed = keys.ed25519_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    rsa_pem = keys.rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signatures = [
        _sign(
            message,
            keys.ed25519_selector,
            domain,
            base64.b64encode(ed_seed),  # RFC 8463 keys as dkimpy (PyNaCl) reads them
            b"ed25519-sha256",
            linesep,
        ),
        _sign(message, keys.rsa_selector, domain, rsa_pem, b"rsa-sha256", linesep),
    ]
    return b"".join(signatures) + message


def verify_incoming(message: bytes, dns: Callable[[bytes], bytes]) -> bool:
    """True if a DKIM signature of ``message`` verifies and is the From domain's.

    ``dns`` answers a TXT query (``b"sel._domainkey.example.fr."``) with the
    record's text, or ``b""``. Any one valid signature suffices (a court
    system may sign with one algorithm), but only one whose ``d=`` is the
    domain of the single From address or a parent of it: a signature by an
    unrelated domain says nothing about who wrote the message.
    """
    author = _author_domain(message)
    if author is None:
        return False

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return dns(name)

    for index in range(_signature_count(message)):
        try:
            checker = dkim.DKIM(message)
            valid = bool(checker.verify(idx=index, dnsfunc=lookup))
        except dkim.DKIMException:
            continue  # malformed, or failed: the next signature may still pass
        if valid and _aligned(checker.domain, author):
            return True
    return False


# -- helpers ---------------------------------------------------------------------


def _sign(
    message: bytes,
    selector: str,
    domain: bytes,
    private_key: bytes,
    algorithm: bytes,
    linesep: bytes,
) -> bytes:
    header = dkim.sign(
        message,
        selector.encode("ascii"),
        domain,
        private_key,
        canonicalize=_RELAXED,
        signature_algorithm=algorithm,
        include_headers=list(_H_TAG),
        linesep=linesep,
    )
    if not isinstance(header, bytes) or not header.startswith(b"DKIM-Signature:"):
        raise ValueError(f"dkimpy returned no {algorithm.decode()} signature")
    return header


def _selectors(prefix: str) -> tuple[str, str]:
    if not prefix or not all(c.isascii() and (c.isalnum() or c == "-") for c in prefix):
        raise ValueError(f"a selector prefix is letters, digits and '-', not {prefix!r}")
    return f"{prefix}-ed25519", f"{prefix}-rsa"


def _key_file(selector: str) -> str:
    return f"dkim-{selector}.key.pem"


def _load(path: Path) -> object:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _txt(kind: str, public: bytes) -> str:
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}"


def _zone(keys: DkimKeys) -> str:
    """The records in zone-file syntax; values longer than a TXT string's
    255 bytes (RSA's) are split into several strings, which resolvers join."""
    lines = [
        f"; DKIM keys of {keys.domain}: publish these TXT records before signing with them.",
        f"; {keys.ed25519_selector}: ed25519-sha256 (RFC 8463); {keys.rsa_selector}: rsa-sha256.",
    ]
    for name, value in keys.dns_records().items():
        strings = " ".join(f'"{value[i : i + 250]}"' for i in range(0, len(value), 250))
        lines.append(f"{name} IN TXT {strings}")
    return "\n".join(lines) + "\n"


def _signature_count(message: bytes) -> int:
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    return len(headers.get_all("DKIM-Signature") or [])


def _author_domain(message: bytes) -> bytes | None:
    # Decoded as UTF-8 first: an SMTPUTF8 From has raw UTF-8 in its address,
    # which the bytes parser would turn into an opaque Header object.
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    headers = HeaderParser(policy=compat32).parsestr(head.decode("utf-8", "replace"))
    found = headers.get_all("From") or []
    addresses = getaddresses([str(v) for v in found])
    if len(found) != 1 or len(addresses) != 1:
        return None  # no author, or several: nothing to align with
    _name, address = addresses[0]
    if address.count("@") != 1:
        return None
    try:
        # d= is always the ASCII (A-label) form; an internationalised From
        # domain is compared in that form.
        return address.rsplit("@", 1)[1].rstrip(".").lower().encode("idna")
    except UnicodeError:
        return None


def _aligned(signer: object, author: bytes) -> bool:
    """Relaxed alignment (as DMARC's): the signing domain is the author's or a
    parent of it, never a bare top-level domain."""
    if not isinstance(signer, bytes):
        return False
    domain = signer.rstrip(b".").lower()
    if b"." not in domain:
        return False
    return author == domain or author.endswith(b"." + domain)
