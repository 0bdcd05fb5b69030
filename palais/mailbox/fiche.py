"""The "Fiche dossier": a generated message summing a dossier up, for each mailbox showing it.

An HTML part names the dossier, its status, its parties (their addresses
hidden from a lawyer for the parties they do not represent when the dossier
is confidential), the lawyers constituted and the hearings; an iCalendar
part (``text/calendar``, made with the icalendar library) carries the
hearings for the holder's calendar.

Where it sits: at the top of the dossier's own Reçus box
(``Dossiers/<n>/Reçus``), flagged \\Seen, and not in the global INBOX view.
Reçus is where a lawyer opens a dossier, every client shows it and no new
folder kind has to be taught to the rules of moves and deletions; the
global INBOX would receive a new unread copy at each hearing moved.
Flagged \\Seen it never triggers a read receipt (it has no sender to
acknowledge), and storage replaces it whole when an event changes it.

The same facts give the same bytes (storage plans outside the writer and
again inside it, on the facts then in force).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime

from icalendar import Calendar, Event

from palais.mailbox.court_events import DossierStatus, Party, PersonType, Quality
from palais.mailbox.dossier_life import DossierLife, FicheCopy

__all__ = ["FICHE_SUBJECT", "FicheFacts", "FicheReader", "fiche_mail", "plan_fiches"]

FICHE_SUBJECT = "Fiche dossier"
# A hearing's length when the court gives none: what a calendar shows.
HEARING_LENGTH = timedelta(hours=1)

_STATUS = {
    DossierStatus.PROVISOIRE: "provisoire",
    DossierStatus.EN_COURS: "en cours",
    DossierStatus.TERMINE: "terminé",
}
_QUALITY = {
    Quality.DEMANDEUR: "demandeur",
    Quality.DEFENDEUR: "défendeur",
    Quality.INTERVENANT_FORCE: "intervenant forcé",
}
_PERSON = {
    PersonType.PHYSIQUE: "personne physique",
    PersonType.MORALE: "personne morale",
    PersonType.AUTORITE_ADMINISTRATIVE: "autorité administrative",
}


@dataclass(frozen=True, slots=True)
class FicheReader:
    """Whose mailbox the Fiche goes to, and what they may see."""

    mailbox_owner: str
    # A lawyer (or their staff's mailbox) sees, in a confidential dossier,
    # only the addresses of the parties they represent; a service, a
    # magistrate or a court system sees them all.
    lawyer: bool


@dataclass(frozen=True, slots=True)
class FicheFacts:
    """The dossier as the directory knows it, besides its life."""

    number: str
    address: str  # the dossier's own address
    juridiction: str
    service_address: str


def _shown_address(life: DossierLife, party: Party, reader: FicheReader) -> str | None:
    if party.address is None:
        return None
    hidden = life.confidential and reader.lawyer
    if hidden and party.id not in life.represented_by(reader.mailbox_owner):
        return None
    a = party.address
    return f"{a.number_and_street}, {a.postcode} {a.town}, {a.country}"


def fiche_html(life: DossierLife, facts: FicheFacts, reader: FicheReader) -> str:
    e = html.escape
    rows = []
    for party in life.parties:
        address = _shown_address(life, party, reader)
        if address is None and party.address is not None:
            shown = "<em>adresse masquée (dossier confidentiel)</em>"
        else:
            shown = e(address or "")
        lawyers = ", ".join(e(a) for a in life.lawyers_of(party.id)) or "—"
        rows.append(
            f"<tr><td>{e(party.name)}</td><td>{e(_QUALITY[party.quality])}</td>"
            f"<td>{e(_PERSON[party.person_type])}</td><td>{shown}</td><td>{lawyers}</td></tr>"
        )
    hearings = [
        f"<tr><td>{h.date.strftime('%d/%m/%Y')}</td><td>{h.time.strftime('%H:%M')}</td>"
        f"<td>{e(h.formation)}</td><td>{e(h.type)}</td><td>{e(h.room or '')}</td></tr>"
        for h in life.hearings
    ]
    details = [
        ("Juridiction", facts.juridiction),
        ("Service", life.service or facts.service_address),
        ("Statut", _STATUS[life.status]),
    ]
    if life.dossier_type is not None:
        details.append(("Type", life.dossier_type.value.replace("_", " ")))
    if life.nac:
        details.append(("Nature de l'affaire", life.nac))
    if life.act_nature:
        when = f" du {life.act_date.strftime('%d/%m/%Y')}" if life.act_date else ""
        details.append(("Acte introductif", f"{life.act_nature}{when}"))
    if life.confidential:
        details.append(("Confidentialité", "dossier confidentiel"))
    details.append(("Adresse du dossier", facts.address))
    dl = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in details)
    no_party = '<tr><td colspan="5">aucune partie connue</td></tr>'
    no_hearing = '<tr><td colspan="5">aucune audience</td></tr>'
    return (
        '<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8">'
        f"<title>{FICHE_SUBJECT} {e(facts.number)}</title></head><body>\n"
        f"<h1>{FICHE_SUBJECT} {e(facts.number)}</h1>\n"
        f"<table>{dl}</table>\n"
        "<h2>Parties</h2>\n<table><tr><th>Partie</th><th>Qualité</th><th>Type</th>"
        "<th>Adresse</th><th>Avocats</th></tr>"
        + ("".join(rows) or no_party)
        + "</table>\n<h2>Audiences</h2>\n<table><tr><th>Date</th><th>Heure</th>"
        "<th>Formation</th><th>Type</th><th>Salle</th></tr>"
        + ("".join(hearings) or no_hearing)
        + "</table>\n</body></html>\n"
    )


def fiche_calendar(
    life: DossierLife, facts: FicheFacts, *, now: datetime, zone: tzinfo, domain: str
) -> bytes:
    """The hearings as an iCalendar object (RFC 5545), one VEVENT each."""
    cal = Calendar()
    cal.add("prodid", "-//Palais//Fiche dossier//FR")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    for h in life.hearings:
        starts = datetime.combine(h.date, h.time, tzinfo=zone)
        event = Event()
        event.add("uid", f"{h.id}.{facts.number}@{domain}")
        event.add("dtstamp", now)
        event.add("dtstart", starts)
        event.add("dtend", starts + HEARING_LENGTH)
        event.add("summary", f"[{facts.number}] Audience {h.type} ({h.formation})")
        place = ", ".join(p for p in (h.room, facts.juridiction) if p)
        event.add("location", place)
        event.add("sequence", life.version)  # a moved hearing supersedes the earlier one
        cal.add_component(event)
    cal.add_missing_timezones()
    return bytes(cal.to_ical())


def fiche_mail(
    life: DossierLife,
    facts: FicheFacts,
    reader: FicheReader,
    *,
    now: datetime,
    zone: tzinfo,
    sender: str,
) -> bytes:
    """The Fiche dossier of ``life`` for ``reader``: the same inputs, the same bytes."""
    domain = sender.rpartition("@")[2] or "palais.invalid"
    msg = EmailMessage()
    msg["From"] = f"Palais <{sender}>"
    msg["To"] = reader.mailbox_owner
    msg["Subject"] = f"[{facts.number}] {FICHE_SUBJECT}"
    msg["Date"] = format_datetime(now.astimezone(zone))
    owner = hashlib.sha256(reader.mailbox_owner.lower().encode()).hexdigest()[:16]
    msg["Message-ID"] = f"<fiche.{facts.number}.v{life.version}.{owner}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic reply to it
    page = fiche_html(life, facts, reader)
    calendar = fiche_calendar(life, facts, now=now, zone=zone, domain=domain)
    msg.set_content(page, subtype="html", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(
        calendar,
        maintype="text",
        subtype="calendar",
        filename=f"audiences-{facts.number}.ics",
        params={"method": "PUBLISH"},
    )
    # A boundary of its contents, not a random one: the same facts, the same bytes.
    contents = hashlib.sha256(page.encode() + b"\0" + calendar).hexdigest()[:32]
    msg.set_boundary(f"=_fiche_{contents}")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def plan_fiches(
    life: DossierLife,
    facts: FicheFacts,
    readers: Sequence[FicheReader],
    *,
    now: datetime,
    zone: tzinfo,
    sender: str,
) -> tuple[FicheCopy, ...]:
    """The Fiche each mailbox showing the dossier gets."""
    return tuple(
        FicheCopy(r.mailbox_owner, fiche_mail(life, facts, r, now=now, zone=zone, sender=sender))
        for r in readers
    )
