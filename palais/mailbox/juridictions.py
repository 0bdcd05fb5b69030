"""The juridictions directory: where a lawyer files a saisine or a constitution.

Each juridiction has a code, a type (CPH, TPROX, TJ), a city, its registry
services and their addresses, the addresses saisines and constitutions are
sent to, and its court system's identity (address and certificate subject).
Lawyers find one by typing at least three letters of its city, accents,
case and hyphens aside ("st eti" does not, "eti" and "saint-etienne" do
find Saint-Étienne). The directory is reference data read at start
(``palais.juridictions_file``); this module only holds and searches it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from palais.mailbox.errors import InvalidMessage
from palais.mailbox.saisine import JuridictionType

MIN_SEARCH_LETTERS = 3


class TooShort(InvalidMessage):
    """A search of fewer than three letters: it would list half the country."""


class BadDirectory(ValueError):
    """The directory's data is not usable (says which entry and field)."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class CourtSystem:
    address: str
    subject: str  # the certificate's subject, RFC 4514


@dataclass(frozen=True, slots=True)
class Juridiction:
    code: str
    type: JuridictionType
    name: str
    city: str
    address: str
    saisine_address: str
    constitution_address: str
    court_system: CourtSystem
    services: tuple[Service, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "type": self.type.value,
            "name": self.name,
            "city": self.city,
            "address": self.address,
            "saisine_address": self.saisine_address,
            "constitution_address": self.constitution_address,
            "court_system": {
                "address": self.court_system.address,
                "subject": self.court_system.subject,
            },
            "services": [{"name": s.name, "address": s.address} for s in self.services],
        }


def folded(text: str) -> str:
    """Lower case, no accents, words separated by one space ("Saint-Étienne" -> "saint etienne")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join("".join(c if c.isalnum() else " " for c in bare).split())


class JuridictionDirectory:
    """Every juridiction, searchable by city; built once, read-only."""

    def __init__(self, juridictions: Iterable[Juridiction]) -> None:
        self._all = tuple(sorted(juridictions, key=lambda j: (folded(j.city), j.type, j.code)))
        codes = [j.code for j in self._all]
        if len(set(codes)) != len(codes):
            raise BadDirectory("a juridiction code appears twice")
        self._by_code = {j.code: j for j in self._all}
        self._cities = [(folded(j.city), j) for j in self._all]

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Any:
        return iter(self._all)

    def get(self, code: str) -> Juridiction | None:
        return self._by_code.get(code)

    def search(self, text: str, type: JuridictionType | None = None) -> list[Juridiction]:
        """Juridictions whose city, or a word of it, starts with ``text``."""
        wanted = folded(text)
        if sum(c.isalnum() for c in wanted) < MIN_SEARCH_LETTERS:
            raise TooShort(
                f"Saisissez au moins {MIN_SEARCH_LETTERS} lettres de la ville",
                reason=f"juridiction search too short: {text!r}",
            )
        found = []
        for city, juridiction in self._cities:
            if type is not None and juridiction.type is not type:
                continue
            if city.startswith(wanted) or any(
                city[i + 1 :].startswith(wanted) for i, c in enumerate(city) if c == " "
            ):
                found.append(juridiction)
        return found


def directory_from_data(data: Mapping[str, Any]) -> JuridictionDirectory:
    """The directory from its file's parsed content (``[[juridiction]]`` tables)."""
    entries = data.get("juridiction")
    if not isinstance(entries, list) or not entries:
        raise BadDirectory("no [[juridiction]] entry")
    unknown = set(data) - {"juridiction"}
    if unknown:
        raise BadDirectory(f"unknown key {sorted(unknown)[0]!r}")
    return JuridictionDirectory(_juridiction(i, e) for i, e in enumerate(entries))


_FIELDS = (
    "code",
    "type",
    "name",
    "city",
    "address",
    "saisine_address",
    "constitution_address",
    "court_system",
    "service",
)


def _juridiction(index: int, entry: Any) -> Juridiction:
    where = f"juridiction #{index + 1}"
    if not isinstance(entry, dict):
        raise BadDirectory(f"{where}: not a table")
    where = f"juridiction {entry.get('code', f'#{index + 1}')!s}"
    for key in entry:
        if key not in _FIELDS:
            raise BadDirectory(f"{where}: unknown key {key!r}")

    def text(table: Mapping[str, Any], key: str, context: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise BadDirectory(f"{context}: {key} must be a non-empty string")
        return value

    try:
        kind = JuridictionType(str(entry.get("type")))
    except ValueError:
        raise BadDirectory(f"{where}: type must be CPH, TPROX or TJ") from None
    court = entry.get("court_system")
    if not isinstance(court, dict):
        raise BadDirectory(f"{where}: court_system must be a table (address, subject)")
    services = entry.get("service", [])
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        raise BadDirectory(f"{where}: service must be [[juridiction.service]] tables")
    return Juridiction(
        code=text(entry, "code", where),
        type=kind,
        name=text(entry, "name", where),
        city=text(entry, "city", where),
        address=text(entry, "address", where),
        saisine_address=text(entry, "saisine_address", where).lower(),
        constitution_address=text(entry, "constitution_address", where).lower(),
        court_system=CourtSystem(
            text(court, "address", f"{where}: court_system").lower(),
            text(court, "subject", f"{where}: court_system"),
        ),
        services=tuple(
            Service(text(s, "name", f"{where}: service"), text(s, "address", f"{where}: service"))
            for s in services
        ),
    )
