"""Filing plans: where an accepted message goes, and what commits with it.

A plan is computed by the domain and carried out by storage in one
transaction, which allocates the UIDs and MODSEQs: the copies to file, the
drafts the message supersedes, and any further records that must be true
together with the filing (``records``).
"""

from __future__ import annotations

from dataclasses import dataclass

from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.model import BoxKind, CommittedRecord

__all__ = ["CommittedRecord", "Destination", "FilingPlan"]


@dataclass(frozen=True, slots=True)
class Destination:
    owner: str
    kind: BoxKind
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class FilingPlan:
    dossier: str | None
    destinations: tuple[Destination, ...]
    supersedes: SupersededDrafts | None = None
    records: tuple[CommittedRecord, ...] = ()
