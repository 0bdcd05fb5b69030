"""Flag changes: which flags may be stored, and what a change writes.

A flag belongs to a placement, not to one folder: set in a dossier's box it
shows in the global view too. The plan therefore names placements, and
storage writes the new flags in every view of each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from palais.mailbox.errors import CannotDoThat
from palais.mailbox.model import CommittedRecord, FlagMode

_FLAG = re.compile(r"^\\?[^\s()\]{%*\"\\]+$")


@dataclass(frozen=True, slots=True)
class FlaggedEntry:
    """An entry of the box acted on, as the planner needs it."""

    uid: int
    flags: frozenset[str]
    modseq: int
    placement: int


@dataclass(frozen=True, slots=True)
class FlagChange:
    """The placement's flags become ``flags`` in both its views (``uid``: in the box acted on)."""

    placement: int
    uid: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class FlagPlan:
    changes: tuple[FlagChange, ...]  # in UID order
    modified: tuple[int, ...]  # UIDs changed since UNCHANGEDSINCE: left alone
    records: tuple[CommittedRecord, ...] = ()  # committed with the changes


def check_storable(flags: Iterable[str]) -> None:
    """Any keyword or system flag but \\Recent, which only the server sets."""
    for flag in flags:
        if not _FLAG.match(flag) or flag.lower() == "\\recent":
            raise CannotDoThat(f"Flag {flag} cannot be stored")


def plan_flag_change(
    current: Sequence[FlaggedEntry],
    mode: FlagMode,
    flags: frozenset[str],
    unchanged_since: int | None = None,
) -> FlagPlan:
    """Add, remove or replace ``flags`` on these entries; unchanged ones are not written."""
    check_storable(flags)
    changes: list[FlagChange] = []
    modified: list[int] = []
    for entry in sorted(current, key=lambda e: e.uid):
        if unchanged_since is not None and entry.modseq > unchanged_since:
            modified.append(entry.uid)
            continue
        if mode is FlagMode.ADD:
            new = entry.flags | flags
        elif mode is FlagMode.REMOVE:
            new = entry.flags - flags
        else:
            new = flags
        if new != entry.flags:
            changes.append(FlagChange(entry.placement, entry.uid, new))
    return FlagPlan(tuple(changes), tuple(modified))


def newly_read(current: Sequence[FlaggedEntry], plan: FlagPlan) -> tuple[int, ...]:
    """The placements this plan marks \\Seen that were not: each may be a first reading."""
    before = {e.placement: e.flags for e in current}
    return tuple(
        c.placement
        for c in plan.changes
        if "\\Seen" in c.flags and "\\Seen" not in before.get(c.placement, frozenset())
    )
