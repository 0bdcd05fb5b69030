"""Who may send what to whom, and where an accepted message is filed.

Pure rules: the directory facts come in as values, the filing plan goes out
as a value that storage executes atomically.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from palais.mailbox.drafts import supersedes_drafts
from palais.mailbox.errors import SenderMismatch
from palais.mailbox.filing import Destination, FilingPlan
from palais.mailbox.identity import ROLES_BY_COMMUNITY, Identity, Role, TrustCommunity
from palais.mailbox.model import BoxKind

__all__ = [
    "LISTENER_COMMUNITIES",
    "SUBMITTING_ROLES",
    "Addressee",
    "AddresseeKind",
    "Destination",
    "FilingPlan",
    "Listener",
    "check_sender",
    "listener_roles",
    "plan_filing",
]


class AddresseeKind(enum.Enum):
    DOSSIER = "dossier"  # writing to it reaches the service in charge
    SERVICE = "service"
    PERSON = "person"
    # A juridiction's addresses for saisines and constitutions (palais.mailbox.saisine_flow).
    SAISINE = "saisine"
    CONSTITUTION = "constitution"


@dataclass(frozen=True, slots=True)
class Addressee:
    """A recipient address as the directory knows it."""

    address: str
    kind: AddresseeKind
    mailbox_owner: str  # whose INBOX receives it
    dossier: str | None = None  # dossier number, for a dossier address
    juridiction: str | None = None  # juridiction code, for a saisine or constitution address


class Listener(enum.StrEnum):
    """The gateway's doors; each one lets in the communities that belong there."""

    SMTPS = "smtps"  # people's submission, implicit TLS
    SUBMISSION = "submission"  # people's submission, STARTTLS
    IMAPS = "imaps"  # people reading their and their service's mailboxes
    COURT = "court"  # court systems pushing into dossiers, STARTTLS
    HTTPS = "https"  # people's printable receipts, operators' metrics; some pages need none


#: Which communities' certificates each listener trusts. The TLS context of a
#: listener is built from these anchors only, so a certificate from another
#: community fails the handshake itself: a court system never reaches the
#: lawyers' submission listeners (it reads its INBOX over IMAPS), a lawyer
#: never reaches the court listener, and
#: operators' certificates only open the HTTPS listener (where people fetch
#: their printable receipts; each page checks the role it serves).
LISTENER_COMMUNITIES: Final[Mapping[Listener, frozenset[TrustCommunity]]] = MappingProxyType(
    {
        Listener.SMTPS: frozenset({TrustCommunity.AVOCATS, TrustCommunity.JUSTICE}),
        Listener.SUBMISSION: frozenset({TrustCommunity.AVOCATS, TrustCommunity.JUSTICE}),
        # Court systems fetch there what lawyers sent their juridiction.
        Listener.IMAPS: frozenset(
            {TrustCommunity.AVOCATS, TrustCommunity.JUSTICE, TrustCommunity.COURT_SYSTEMS}
        ),
        Listener.COURT: frozenset({TrustCommunity.COURT_SYSTEMS}),
        Listener.HTTPS: frozenset(
            {TrustCommunity.AVOCATS, TrustCommunity.JUSTICE, TrustCommunity.ADMIN}
        ),
    }
)


def listener_roles(listener: Listener) -> frozenset[Role]:
    """The roles whose certificates a listener accepts (from its communities)."""
    return frozenset(
        role for group in LISTENER_COMMUNITIES[listener] for role in ROLES_BY_COMMUNITY[group]
    )


# Roles that may submit mail through the people's submission listeners
# (smtps, submission); court systems submit on their own listener.
SUBMITTING_ROLES: Final = listener_roles(Listener.SUBMISSION)


def check_sender(who: Identity, mail_from: str) -> None:
    """The envelope sender must be the certificate's own address.

    A clerk may also send as the service whose mailbox they share.
    """
    sender = mail_from.strip().lower()
    if sender in (who.address, who.mailbox_owner):
        return
    raise SenderMismatch(
        f"Sender <{mail_from}> is not your address <{who.address}>",
        reason=f"MAIL FROM {mail_from!r} by {who.address}",
    )


def plan_filing(
    who: Identity,
    recipients: Sequence[Addressee],
    dossier: str | None = None,
    *,
    message_id: str | None = None,
) -> FilingPlan:
    """One copy in the sender's Envoyés (already read), one per recipient's INBOX;
    the sender's drafts with the message's Message-ID leave Brouillons."""
    destinations: list[Destination] = [
        Destination(who.mailbox_owner, BoxKind.ENVOYES, frozenset({"\\Seen"}))
    ]
    seen_owners: set[str] = set()
    for rcpt in recipients:
        if rcpt.dossier and dossier is None:
            dossier = rcpt.dossier
        if rcpt.mailbox_owner in seen_owners:
            continue  # a message is shown once per mailbox however it is addressed
        seen_owners.add(rcpt.mailbox_owner)
        destinations.append(Destination(rcpt.mailbox_owner, BoxKind.RECUS))
    return FilingPlan(
        dossier=dossier,
        destinations=tuple(destinations),
        supersedes=supersedes_drafts(who.mailbox_owner, message_id),
    )
