"""Finding a dossier before a constitution: by its number, or by party names.

A lawyer who is not constituted yet knows the dossier's number, or the
names of its parties: then the juridiction's type and the juridiction are
mandatory, with at least one demandeur or défendeur name. The answer says
only what choosing the dossier needs: number, juridiction, service,
status, demandeur and défendeur (never addresses, never the lawyers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palais.mailbox.boxes import DOSSIER_NUMBER
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.juridictions import Juridiction, JuridictionDirectory, folded
from palais.mailbox.saisine import JuridictionType

__all__ = ["MAX_RESULTS", "DossierCard", "DossierQuery", "dossier_query"]

MAX_RESULTS = 50
# A party name searched: its folded form holds at least this many letters.
MIN_NAME_LETTERS = 2


@dataclass(frozen=True, slots=True)
class DossierQuery:
    number: str | None = None
    juridiction: Juridiction | None = None
    demandeur: str | None = None  # folded
    defendeur: str | None = None  # folded


@dataclass(frozen=True, slots=True)
class DossierCard:
    number: str
    juridiction: str
    service: str
    status: str
    demandeur: tuple[str, ...]
    defendeur: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "juridiction": self.juridiction,
            "service": self.service,
            "status": self.status,
            "demandeur": list(self.demandeur),
            "defendeur": list(self.defendeur),
        }


def dossier_query(params: Mapping[str, str], juridictions: JuridictionDirectory) -> DossierQuery:
    """The search the parameters ask for (``numero``; or ``type``,
    ``juridiction``, ``demandeur``, ``defendeur``): every mistake listed."""
    number = (params.get("numero") or "").strip()
    if number:
        if not DOSSIER_NUMBER.fullmatch(number):
            raise _invalid(["numero: numéro national AAAA-NNNNNNN"])
        return DossierQuery(number=number)
    problems: list[str] = []
    kind_text = (params.get("type") or "").strip().upper()
    kind: JuridictionType | None = None
    if not kind_text:
        problems.append("type: champ obligatoire (CPH, TPROX ou TJ)")
    else:
        try:
            kind = JuridictionType(kind_text)
        except ValueError:
            problems.append("type: CPH, TPROX ou TJ")
    code = (params.get("juridiction") or "").strip().upper()
    juridiction = juridictions.get(code) if code else None
    if not code:
        problems.append("juridiction: champ obligatoire (code de la juridiction)")
    elif juridiction is None:
        problems.append(f"juridiction: aucune juridiction {code[:40]}")
    elif kind is not None and juridiction.type is not kind:
        problems.append(f"juridiction: {juridiction.code} n'est pas du type {kind.value}")
    names = {q: folded(params.get(q) or "") for q in ("demandeur", "defendeur")}
    if not any(names.values()):
        problems.append("demandeur: au moins un nom de demandeur ou de défendeur")
    for quality, name in names.items():
        if name and sum(c.isalnum() for c in name) < MIN_NAME_LETTERS:
            problems.append(f"{quality}: au moins {MIN_NAME_LETTERS} lettres")
    if problems:
        raise _invalid(problems)
    return DossierQuery(
        juridiction=juridiction,
        demandeur=names["demandeur"] or None,
        defendeur=names["defendeur"] or None,
    )


def _invalid(problems: list[str]) -> InvalidMessage:
    return InvalidMessage(
        "Recherche de dossier invalide",
        details=tuple(problems),
        reason="dossier search: " + "; ".join(problems),
    )
