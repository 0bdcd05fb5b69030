"""Detached CMS signatures (RFC 5652) by the evidence key, CAdES-BES style.

Built here rather than with cryptography's PKCS7 builder because the key
may be on an HSM: only ``EvidenceKey.sign`` touches the key. The signed
attributes are content type, signing time, message digest and the signer's
certificate hash (signingCertificateV2, RFC 5035), so that a verifier
knows which certificate was meant and when it signed.

Everything but the signing time, the digest and the signature is the same
for every receipt: it is encoded once per certificate (``CmsTemplate``, which
needs no key), and each signature only fills those three in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from palais.pki.signing import EvidenceKey, signature_algorithm

_SIGNATURE_ALGORITHMS = {"ecdsa": "sha256_ecdsa", "rsa": "sha256_rsa"}


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class SignedParts:
    """A detached signature and what it was made over."""

    der: bytes  # ContentInfo(SignedData), DER
    signing_time: datetime


class CmsTemplate:
    """The parts of a SignedData that are the same for every signature by one
    certificate: built without the key, so that a process that never holds
    it (the sealing worker) can prepare what the key then signs."""

    def __init__(self, certificate: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
        signer = asn1_x509.Certificate.load(_der(certificate))
        sid = cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value=cms.IssuerAndSerialNumber(
                {"issuer": signer.issuer, "serial_number": signer.serial_number}
            ),
        )
        signing_certificate = cms.CMSAttribute(
            {
                "type": "signing_certificate_v2",
                "values": [
                    tsp.SigningCertificateV2(
                        {
                            "certs": [
                                tsp.ESSCertIDv2(
                                    {
                                        "hash_algorithm": {"algorithm": "sha256"},
                                        "cert_hash": hashlib.sha256(_der(certificate)).digest(),
                                    }
                                )
                            ]
                        }
                    )
                ],
            }
        )
        sha256 = algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
        self._signature_algorithm = algos.SignedDigestAlgorithm(
            {"algorithm": _SIGNATURE_ALGORITHMS[signature_algorithm(certificate)]}
        ).dump()
        self._content_type = cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()
        self._signing_certificate = signing_certificate.dump()
        # SignerInfo up to its signed attributes: version 1, sid, digest algorithm.
        self._signer_head = _tlv(0x02, b"\x01") + sid.dump() + sha256
        # SignedData up to its signer infos: version 1, digest algorithms,
        # detached data content, certificates ([0] IMPLICIT).
        self._signed_data_head = (
            _tlv(0x02, b"\x01")
            + _tlv(0x31, sha256)
            + cms.EncapsulatedContentInfo({"content_type": "data"}).dump()
            + _tlv(0xA0, b"".join(_der(c) for c in (certificate, *chain)))
        )

    def attributes(self, content: bytes, when: datetime) -> bytes:
        """The signed attributes of a signature of ``content`` made at ``when``
        (the contents of their SET: what ``to_be_signed`` wraps)."""
        # DER orders a SET OF by its members' encodings; a verifier that
        # re-encodes the attributes (OpenSSL does) must find the bytes signed.
        return b"".join(
            sorted(
                (
                    self._content_type,
                    _attribute(_SIGNING_TIME, _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())),
                    _attribute(_MESSAGE_DIGEST, _tlv(0x04, hashlib.sha256(content).digest())),
                    self._signing_certificate,
                )
            )
        )

    @staticmethod
    def to_be_signed(attributes: bytes) -> bytes:
        # The signature covers the attributes as a SET (RFC 5652 5.4); they
        # travel as [0] IMPLICIT with the same contents.
        return _tlv(0x31, attributes)

    def signed_data(self, attributes: bytes, signature: bytes) -> bytes:
        """ContentInfo(SignedData), DER, from the attributes and their signature."""
        signer_info = _tlv(
            0x30,
            self._signer_head
            + _tlv(0xA0, attributes)
            + self._signature_algorithm
            + _tlv(0x04, signature),
        )
        signed_data = _tlv(0x30, self._signed_data_head + _tlv(0x31, signer_info))
        return _tlv(0x30, _SIGNED_DATA_OID + _tlv(0xA0, signed_data))


def signing_time(when: datetime | None = None) -> datetime:
    """A signing time as the signature carries it: UTC, whole seconds."""
    return (when or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)


class CmsSigner:
    """Makes detached SignedData over content with one evidence key."""

    def __init__(self, key: EvidenceKey) -> None:
        self._key = key
        self.template = CmsTemplate(key.certificate, key.chain)

    def sign(self, content: bytes, *, when: datetime | None = None) -> SignedParts:
        """A detached signature of ``content``; raises ``EvidenceUnavailable``
        if the key cannot sign."""
        when = signing_time(when)
        attributes = self.template.attributes(content, when)
        return SignedParts(self.signed_data(attributes), when)

    def signed_data(self, attributes: bytes) -> bytes:
        """The SignedData of prepared attributes, signed by the key."""
        template = self.template
        return template.signed_data(attributes, self._key.sign(template.to_be_signed(attributes)))


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, contents: bytes) -> bytes:
    return bytes((tag,)) + _length(len(contents)) + contents


def _attribute(oid: bytes, value: bytes) -> bytes:
    return _tlv(0x30, oid + _tlv(0x31, value))


_SIGNING_TIME = core.ObjectIdentifier("1.2.840.113549.1.9.5").dump()
_MESSAGE_DIGEST = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()
_SIGNED_DATA_OID = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
