"""Filing plans: where an accepted message goes, and what commits with it.

A plan is computed by the domain and carried out by storage in one
transaction, which allocates the UIDs and MODSEQs: the copies to file, the
drafts the message supersedes, and any further records that must be true
together with the filing (``records``).
"""

from __future__ import annotations

from dataclasses import dataclass

from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.model import BoxKind


@dataclass(frozen=True, slots=True)
class Destination:
    owner: str
    kind: BoxKind
    flags: frozenset[str] = frozenset()


class CommittedRecord:
    """A domain value that must commit with the plan carrying it (say, an
    evidence log entry). Each concrete kind is a frozen dataclass deriving
    from this; storage knows how to write each kind it is given, and refuses
    (nothing commits) a kind it does not know."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class FilingPlan:
    dossier: str | None
    destinations: tuple[Destination, ...]
    supersedes: SupersededDrafts | None = None
    records: tuple[CommittedRecord, ...] = ()
