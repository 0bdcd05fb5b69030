"""Alerts: a short notice to an outside address when something arrives in a dossier.

Like justice.fr's update alerts or the expertise vault's next-day e-mail, a
person may ask for a notice at an address of their choice, at once or in a
daily digest. A notice names the dossier and the kind of event, never the
content: no subject, no sender, no text, no attachment name. It only says
where to look, with the card, in the secure mailbox.

The rules are here, without I/O: which arrivals call for a notice
(``notice_kind``), whether an address may receive them (``check_address``),
when a person's pending notices are due (``cutoff``, ``digest_at``), and the mail itself
(``compose``). Storage keeps the settings and an outbox of notices; the
gateway's sender sends what is due through the configured relay.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from palais.mailbox.evidence import EventCode
from palais.mailbox.model import BoxKind, CommittedRecord

__all__ = [
    "NEWS",
    "AlertMode",
    "AlertRefused",
    "AlertSetting",
    "Arrival",
    "DossierEventAlert",
    "NoticeKind",
    "PendingNotice",
    "check_address",
    "check_mode",
    "compose",
    "cutoff",
    "digest_at",
    "notice_kind",
    "retry_delay",
]


class AlertMode(enum.StrEnum):
    IMMEDIATE = "immediate"  # a notice as soon as the event is known
    DIGEST = "digest"  # one mail a day, at the configured hour, gathering the day's


class NoticeKind(enum.StrEnum):
    MESSAGE = "message"  # a new message in the dossier's Reçus
    RECEIPT = "receipt"  # a new accusé de réception
    DOSSIER_EVENT = "dossier-event"  # the dossier's life: status, hearing, parties


class AlertRefused(ValueError):
    """A setting the rules refuse; ``text`` says what is wrong, safe to show."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True, slots=True)
class AlertSetting:
    person: str  # the account's address
    owner: str  # the mailbox owner whose arrivals are told (a clerk's: the service)
    address: str  # where notices go, outside the gateway
    mode: AlertMode
    since: datetime  # nothing that arrived before this is told

    def as_json(self) -> dict[str, str]:
        return {"address": self.address, "mode": self.mode.value, "since": self.since.isoformat()}


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message newly placed in one owner's box (facts storage reads)."""

    owner: str
    kind: BoxKind
    dossier: str | None
    message: int
    at: datetime
    # For a receipt: the events it proves (``EventCode`` values), when known.
    events: frozenset[str] = frozenset()
    # The dossier's Fiche, made again: its change is told as the dossier's
    # event (``DossierEventAlert``, with the event), not as a message.
    fiche: bool = False


# Receipts that bring news: someone read the message, the registry decided,
# it could not be delivered. The deposit and delivery receipts come the
# moment one sends: telling of them would only echo one's own act.
NEWS = frozenset(
    {
        EventCode.PREMIERE_LECTURE.value,
        EventCode.ACCEPTATION_GREFFE.value,
        EventCode.REJET_GREFFE.value,
        EventCode.NON_REMISE.value,
    }
)


@dataclass(frozen=True, slots=True)
class PendingNotice:
    id: int
    kind: NoticeKind
    dossier: str
    at: datetime  # when the event happened
    attempts: int = 0  # tries the relay did not take


def notice_kind(arrival: Arrival) -> NoticeKind | None:
    """The notice an arrival calls for: a new message in a dossier's Reçus, a
    new receipt in its Accusés de réception that brings news (``NEWS``; one
    whose events are unknown is told); nothing for the rest (one's own
    Envoyés, drafts, Supprimés, mail outside any dossier)."""
    if arrival.dossier is None or arrival.fiche:
        return None
    if arrival.kind is BoxKind.RECUS:
        return NoticeKind.MESSAGE
    if arrival.kind is BoxKind.ACCUSES and (not arrival.events or arrival.events & NEWS):
        return NoticeKind.RECEIPT
    return None


# The addr-spec people type: dot-atom local part, a domain with a dot.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_address(address: object, own_domains: Collection[str]) -> str:
    """The outside address, normalised (domain in lower case); AlertRefused
    naming what is wrong. An address of the gateway's own domains is
    refused: the notice would land in the mailbox it points to."""
    if not isinstance(address, str) or not address.strip():
        raise AlertRefused('"address" must be an e-mail address')
    address = address.strip()
    if len(address) > 254:
        raise AlertRefused("the address is longer than 254 characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AlertRefused(f"not an e-mail address: {address!r} (expected name@domain)")
    if len(local) > 64 or not _LOCAL.match(local):
        raise AlertRefused(f"the part before @ is not valid in {address!r}")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AlertRefused(f"the domain of {address!r} is not valid") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise AlertRefused(f"the domain of {address!r} is not valid")
    if labels[-1].isdigit():
        raise AlertRefused(f"the domain of {address!r} is not valid")
    own = {d.lower() for d in own_domains}
    if any(ascii_domain == d or ascii_domain.endswith("." + d) for d in own):
        raise AlertRefused(
            f"{address!r} is an address of this gateway: alerts go to an outside address"
        )
    return f"{local}@{ascii_domain}"


def check_mode(mode: object) -> AlertMode:
    if mode not in {m.value for m in AlertMode}:
        raise AlertRefused('"mode" must be "immediate" or "digest"')
    return AlertMode(str(mode))


def retry_delay(attempts: int, *, first: float, longest: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling."""
    return float(min(longest, first * 2.0 ** max(0, min(attempts - 1, 30))))


def digest_at(event: datetime, hour: time, zone: tzinfo) -> datetime:
    """The digest that tells of an event at ``event``: the first time the
    clock shows ``hour`` in ``zone`` at or after it."""
    local = event.astimezone(zone)
    candidate = datetime.combine(local.date(), hour, tzinfo=zone)
    if candidate < local:
        candidate = datetime.combine(local.date() + timedelta(days=1), hour, tzinfo=zone)
    return candidate


def cutoff(mode: AlertMode, now: datetime, *, hour: time, zone: tzinfo) -> datetime:
    """Notices of events up to this instant may go now: all of them at once,
    or those the latest digest (``hour`` in ``zone``, at or before ``now``)
    gathers; a person's notices are due when their oldest is not after it."""
    if mode is AlertMode.IMMEDIATE:
        return now
    local = now.astimezone(zone)
    latest = datetime.combine(local.date(), hour, tzinfo=zone)
    if latest > local:
        latest = datetime.combine(local.date() - timedelta(days=1), hour, tzinfo=zone)
    return latest


@dataclass(frozen=True, slots=True)
class DossierEventAlert(CommittedRecord):
    """Carried by the plan that applies an event of a dossier's life (status,
    hearing, parties): its notices commit with it."""

    dossier: str
    at: datetime


_WHAT = {
    NoticeKind.MESSAGE: ("nouveau message reçu", "nouveaux messages reçus"),
    NoticeKind.RECEIPT: ("nouvel accusé de réception", "nouveaux accusés de réception"),
    NoticeKind.DOSSIER_EVENT: ("événement du dossier", "événements du dossier"),
}
_SENTENCE = {
    NoticeKind.MESSAGE: "Un nouveau message est arrivé dans les Reçus du dossier {d}",
    NoticeKind.RECEIPT: "Un nouvel accusé de réception est arrivé dans le dossier {d}",
    NoticeKind.DOSSIER_EVENT: "Le dossier {d} a connu un nouvel événement",
}
_FOOTER = (
    "Ce courriel ne contient pas le message : ni son objet, ni son expéditeur,\n"
    "ni ses pièces jointes. Pour le lire, connectez-vous à votre messagerie\n"
    "sécurisée avec votre carte.\n"
    "\n"
    "Vous recevez cet avis parce que vous l'avez demandé ; pour ne plus le\n"
    "recevoir : palais client alerts off.\n"
)


def _count(kind: NoticeKind, n: int) -> str:
    one, many = _WHAT[kind]
    return f"{n} {one if n == 1 else many}"


def _when(at: datetime, zone: tzinfo) -> str:
    local = at.astimezone(zone)
    return f"le {local:%d/%m/%Y} à {local:%H:%M}"


def compose(
    notices: Sequence[PendingNotice],
    *,
    mode: AlertMode,
    to: str,
    sender: str,
    now: datetime,
    zone: tzinfo,
    message_id: str,
    instance: str = "Palais",
) -> bytes:
    """The notice mail, in French: one event, or a summary by dossier. Only
    dossier numbers, kinds of event and times; never what a message says."""
    if not notices:
        raise ValueError("a notice mail tells of at least one event")
    ordered = sorted(notices, key=lambda n: (n.at, n.id))
    dossiers = list(dict.fromkeys(n.dossier for n in ordered))
    if len(ordered) == 1 and mode is AlertMode.IMMEDIATE:
        (only,) = ordered
        subject = f"[{instance}] Dossier {only.dossier} : {_WHAT[only.kind][0]}"
        lines = [_SENTENCE[only.kind].format(d=only.dossier) + f" {_when(only.at, zone)}."]
    else:
        if mode is AlertMode.DIGEST:
            day = now.astimezone(zone)
            subject = f"[{instance}] Récapitulatif du {day:%d/%m/%Y}"
        else:
            subject = f"[{instance}] Nouveautés dans vos dossiers"
        subject += f" : {len(ordered)} nouveauté{'s' if len(ordered) > 1 else ''}"
        subject += f" dans {len(dossiers)} dossier{'s' if len(dossiers) > 1 else ''}"
        lines = ["Nouveautés dans vos dossiers :", ""]
        for dossier in dossiers:
            counts = Counter(n.kind for n in ordered if n.dossier == dossier)
            told = ", ".join(_count(k, counts[k]) for k in NoticeKind if counts[k])
            lines.append(f"- dossier {dossier} : {told}")
    body = "Bonjour,\n\n" + "\n".join(lines) + "\n\n" + _FOOTER
    mail = EmailMessage(policy=SMTP)
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = message_id
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    mail.set_content(body, charset="utf-8")
    return mail.as_bytes()
