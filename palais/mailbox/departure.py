"""A clerk's or a magistrate's departure (départ): when it takes effect, what moves, who is told.

Pure rules. An operator declares a departure (``palais admin departure
set``): the last working day and, optionally, a successor. It can be changed
or cancelled until it takes effect, at 00:00 the day after the last day in
the instance's time zone (``[departures] timezone``, Europe/Paris by
default: the courts' midnight, not UTC's). Then, in one transaction:

- the departing account is deactivated (its open sessions are cut by the
  session watcher within a minute);
- with a successor, the successor takes the departing person's place: the
  dossiers they personally take part in (a magistrate's), with a copy of the
  mail of those dossiers when the departing person read them in a mailbox of
  their own, and their service membership (a clerk's: the service's shared
  mailbox, and so all its dossiers);
- without one (or with a successor who can no longer take them), the
  dossiers stay with the service in charge of each, and each lawyer
  constituted in them finds a notice in that dossier's Reçus box saying so.

Who may succeed whom: an active account of the same role (a clerk's
dossiers go to a clerk, a magistrate's to a magistrate), not the departing
person, not someone who leaves by then, and for a clerk someone of the same
service or of none (an account has one service; taking another's would drop
the successor's own).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime

from palais.mailbox.enrolment import AccountFacts
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.identity import Role

__all__ = [
    "DEPARTING_ROLES",
    "DepartureFacts",
    "DeparturePlan",
    "DepartureRefused",
    "DepartureState",
    "DossierFacts",
    "Handover",
    "LawyerNotice",
    "check_cancel",
    "check_departure",
    "effective_at",
    "plan_departure",
]

# Departures are for justice staff; lawyers leave their bar, not the gateway.
DEPARTING_ROLES = frozenset({Role.GREFFIER, Role.MAGISTRAT})


class DepartureState(enum.StrEnum):
    """A departure's life; the value is what the store keeps."""

    PENDING = "pending"  # declared, not yet in effect: may be changed or cancelled
    CANCELLED = "cancelled"
    DONE = "done"  # carried out, once


class DepartureRefused(CannotDoThat):
    """A departure an operator may not declare, change or cancel; the text says why."""

    default_text = "This departure cannot be recorded"


def effective_at(last_day: date, zone: tzinfo) -> datetime:
    """00:00 of the day after ``last_day`` in ``zone``: when the departure takes effect.

    Computed with the zone's rules for that very date (a summer-time change
    never happens at midnight in France, but the zone decides, not us).
    """
    return datetime.combine(last_day + timedelta(days=1), time(0, 0), tzinfo=zone)


def check_departure(
    departing: AccountFacts,
    successor: AccountFacts | None,
    *,
    last_day: date,
    now: datetime,
    zone: tzinfo,
    successor_leaves: date | None = None,
) -> datetime:
    """Refuse a departure that cannot be declared; else when it takes effect.

    ``successor_leaves``: the successor's own pending departure's last day.
    Every problem is listed at once.
    """
    problems: list[str] = []
    if departing.role not in DEPARTING_ROLES:
        problems.append(
            f"{departing.address} is a {departing.role.value}: departures are for clerks"
            " (greffier) and magistrates (magistrat)"
        )
    if not departing.active:
        problems.append(f"{departing.address} is already deactivated")
    when = effective_at(last_day, zone)
    if when <= now:
        today = now.astimezone(zone).date()
        problems.append(f"{last_day.isoformat()} is in the past (today is {today.isoformat()})")
    if successor is not None:
        problems.extend(_successor_problems(departing, successor, last_day, successor_leaves))
    if problems:
        raise DepartureRefused(
            "; ".join(problems),
            details=tuple(problems),
            reason=f"departure of {departing.address}: " + "; ".join(problems),
        )
    return when


def _successor_problems(
    departing: AccountFacts,
    successor: AccountFacts,
    last_day: date,
    successor_leaves: date | None,
) -> list[str]:
    problems: list[str] = []
    if successor.account_id == departing.account_id:
        return [f"{departing.address} cannot succeed themselves"]
    if successor.role is not departing.role:
        problems.append(
            f"the successor {successor.address} is a {successor.role.value}: a"
            f" {departing.role.value}'s dossiers go to a {departing.role.value}"
        )
    if not successor.active:
        problems.append(f"the successor {successor.address} is deactivated")
    if (
        departing.role is Role.GREFFIER
        and successor.service is not None
        and successor.service != departing.service
    ):
        problems.append(
            f"the successor {successor.address} belongs to another service ({successor.service});"
            f" a clerk belongs to one service and {departing.address}'s is"
            f" {departing.service or 'none'}"
        )
    if successor_leaves is not None and successor_leaves <= last_day:
        problems.append(
            f"the successor {successor.address} leaves on {successor_leaves.isoformat()},"
            f" by {last_day.isoformat()}"
        )
    return problems


def check_cancel(state: DepartureState, takes_effect: datetime, now: datetime) -> None:
    """A departure can be cancelled (or changed) while pending and before it takes effect."""
    if state is not DepartureState.PENDING:
        raise DepartureRefused(f"the departure is {state.value}")
    if takes_effect <= now:
        raise DepartureRefused(f"the departure took effect at {takes_effect.isoformat()}")


# -- carrying it out -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DossierFacts:
    """A dossier the departing person followed, and who is constituted in it."""

    number: str
    address: str
    service: str  # the service in charge: its address
    service_name: str
    capacity: str | None  # the departing person's participation, None: through their service
    lawyers: tuple[AccountFacts, ...] = ()  # active lawyers constituted in it


@dataclass(frozen=True, slots=True)
class DepartureFacts:
    """What the store reads, in the transaction that carries the departure out."""

    departure_id: int
    departing: AccountFacts
    successor: AccountFacts | None
    last_day: date
    dossiers: tuple[DossierFacts, ...]
    effective_at: datetime  # when it took effect: the notices' date
    # The successor's own pending departure, if any (it may have been set since).
    successor_leaves: date | None = None


@dataclass(frozen=True, slots=True)
class Handover:
    """What the successor gains."""

    successor: AccountFacts
    join_service: str | None  # the service whose member the successor becomes, if not yet
    participations: tuple[tuple[str, str], ...]  # (dossier number, capacity) to take part in
    # Copy the departing person's mail of these dossiers from their own
    # mailbox to the successor's (a clerk's mail is the service's: none).
    copy_mail_from: str | None
    copy_mail_to: str | None
    mail_dossiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LawyerNotice:
    """A notice filed in one lawyer's Reçus box of one dossier."""

    dossier: str
    lawyer: str  # the lawyer's address
    mailbox_owner: str
    sender: str  # the service in charge: who the notice is from
    data: bytes  # the mail, as filed


@dataclass(frozen=True, slots=True)
class DeparturePlan:
    departure_id: int
    departing: AccountFacts
    handover: Handover | None
    notices: tuple[LawyerNotice, ...] = ()
    # Why a declared successor takes nothing (they cannot any more), for the audit.
    successor_set_aside: str | None = None
    dossiers: tuple[str, ...] = ()


def plan_departure(facts: DepartureFacts, *, zone: tzinfo) -> DeparturePlan:
    """What happens when a departure takes effect, on the facts as they are then.

    A successor who can no longer take the dossiers (deactivated, changed
    role or service since) is set aside: the departure still happens, as if
    declared without one, and the audit says why.
    """
    departing = facts.departing
    numbers = tuple(d.number for d in facts.dossiers)
    successor = facts.successor
    set_aside: str | None = None
    if successor is not None:
        problems = _successor_problems(departing, successor, facts.last_day, facts.successor_leaves)
        if problems:
            set_aside = "; ".join(problems)
            successor = None
    if successor is not None:
        own_mailbox = departing.service is None
        participations = tuple((d.number, d.capacity) for d in facts.dossiers if d.capacity)
        join = (
            departing.service
            if departing.role is Role.GREFFIER
            and departing.service is not None
            and successor.service is None
            else None
        )
        # The successor's mailbox once they joined the service, if they do.
        target = join or successor.mailbox_owner
        copy = own_mailbox and target != departing.mailbox_owner
        return DeparturePlan(
            departure_id=facts.departure_id,
            departing=departing,
            handover=Handover(
                successor=successor,
                join_service=join,
                participations=participations,
                copy_mail_from=departing.mailbox_owner if copy else None,
                copy_mail_to=target if copy else None,
                mail_dossiers=tuple(n for n, _ in participations) if copy else (),
            ),
            dossiers=numbers,
        )
    notices = tuple(
        LawyerNotice(
            dossier=d.number,
            lawyer=lawyer.address,
            mailbox_owner=lawyer.mailbox_owner,
            sender=d.service,
            data=notice_mail(facts, d, lawyer, zone=zone),
        )
        for d in facts.dossiers
        for lawyer in d.lawyers
    )
    return DeparturePlan(
        departure_id=facts.departure_id,
        departing=departing,
        handover=None,
        notices=notices,
        successor_set_aside=set_aside,
        dossiers=numbers,
    )


_TITLES = {Role.GREFFIER: "greffier", Role.MAGISTRAT: "magistrat"}


def notice_mail(
    facts: DepartureFacts,
    dossier: DossierFacts,
    lawyer: AccountFacts,
    *,
    zone: tzinfo,
) -> bytes:
    """The notice to one lawyer of one dossier, in French; the same facts give the same bytes.

    From the service in charge, as the dossier's mail is; a Message-ID of
    its own per departure, dossier and lawyer, so that it is filed once.
    """
    departing = facts.departing
    title = _TITLES.get(departing.role, departing.role.value)
    last_day = facts.last_day.strftime("%d/%m/%Y")
    msg = EmailMessage()
    msg["From"] = f"{_quoted(dossier.service_name)} <{dossier.service}>"
    msg["To"] = f"{_quoted(lawyer.display_name)} <{lawyer.address}>"
    msg["Subject"] = f"[{dossier.number}] Départ du {title} en charge du dossier"
    msg["Date"] = format_datetime(facts.effective_at.astimezone(zone))
    domain = dossier.service.rpartition("@")[2] or "palais.invalid"
    msg["Message-ID"] = (
        f"<depart-{facts.departure_id}.{dossier.number}.{lawyer.account_id}@{domain}>"
    )
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic reply to it
    msg.set_content(
        "Maître,\n\n"
        f"{departing.display_name}, {title} qui suivait le dossier {dossier.number},"
        f" a quitté ses fonctions le {last_day}.\n"
        f"Aucun successeur n'a été désigné : le dossier reste suivi par le service"
        f" {dossier.service_name}.\n"
        f"Vous pouvez continuer d'écrire à l'adresse du dossier, {dossier.address}.\n\n"
        "Ce message est envoyé automatiquement par la passerelle ; il n'appelle pas de"
        " réponse.\n",
        charset="utf-8",
        cte="quoted-printable",
    )
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _quoted(name: str) -> str:
    # A display name with a comma or a quote must be a quoted string.
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
