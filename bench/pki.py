"""Per-run PKI for the peer (Postfix + Dovecot): EC P-256 CA, server and client certs.

Everything is generated fresh for each run by ``palais.pki.certbuilder`` and
written into the run's temporary directory; nothing is reused between runs.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Validity

_ORGANIZATION = "Palais bench"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


class BenchPKI:
    """A throw-away CA with helpers to issue server and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority.create(
            certbuilder.name("Palais bench CA", organization=_ORGANIZATION),
            validity=Validity.lasting(_dt.timedelta(days=2)),
        )
        self.ca_file = self.dir / "ca.pem"
        certbuilder.write_certificate(self.ca_file, self.ca.cert)
        # An (empty) CRL: Dovecot 2.3 defaults to ssl_require_crl = yes, and a
        # revocation check is part of what Palais does too, so give it one.
        self.crl_file = self.dir / "ca.crl.pem"
        certbuilder.write_crl(self.crl_file, self.ca.crl(lifetime=_dt.timedelta(days=2)))
        self.ca_with_crl_file = self.dir / "ca+crl.pem"
        self.ca_with_crl_file.write_bytes(self.ca_file.read_bytes() + self.crl_file.read_bytes())

    def _issue(
        self,
        cn: str,
        *,
        profile: certbuilder.Profile,
        stem: str,
        emails: list[str] | None = None,
        dns_names: list[str] | None = None,
        ips: list[str] | None = None,
    ) -> CertFiles:
        issued = self.ca.issue(
            certbuilder.name(cn, organization=_ORGANIZATION),
            profile=profile,
            emails=emails or (),
            dns_names=dns_names or (),
            ips=ips or (),
            validity=Validity.lasting(_dt.timedelta(days=1)),
        )
        files = CertFiles(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        issued.write(files.cert, files.key)
        return files

    def server(self, hostname: str = "localhost", stem: str = "server") -> CertFiles:
        return self._issue(
            hostname,
            profile=certbuilder.SERVER,
            stem=stem,
            dns_names=list(dict.fromkeys([hostname, "localhost"])),
            ips=["127.0.0.1"],
        )

    def client(
        self, common_name: str, email: str | None = None, stem: str | None = None
    ) -> CertFiles:
        return self._issue(
            common_name,
            profile=certbuilder.CLIENT,
            stem=stem or common_name,
            emails=[email] if email else None,
        )
