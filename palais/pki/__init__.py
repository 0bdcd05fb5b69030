"""Trust anchors, TLS contexts and certificate identities for the gateway.

Depends only on ``palais.mailbox`` (for the identity types) and third-party
crypto libraries.
"""

from palais.pki.devpki import (
    CaName,
    DevPki,
    IssuedIdentity,
    Issuer,
    create_dev_pki,
    issue_identity,
    issue_sample_identities,
    load_dev_pki,
    revoke,
)
from palais.pki.identify import (
    TITLE_ROLES,
    CertificateRefused,
    TrustAnchors,
    TrustConfigError,
)
from palais.pki.tls import (
    ReloadableServerContext,
    client_context,
    peer_certificate_der,
    server_context,
)

__all__ = [
    "TITLE_ROLES",
    "CaName",
    "CertificateRefused",
    "DevPki",
    "IssuedIdentity",
    "Issuer",
    "ReloadableServerContext",
    "TrustAnchors",
    "TrustConfigError",
    "client_context",
    "create_dev_pki",
    "issue_identity",
    "issue_sample_identities",
    "load_dev_pki",
    "peer_certificate_der",
    "revoke",
    "server_context",
]
