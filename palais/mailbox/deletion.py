"""Delete, restore and remove for good: what a move or an expunge does to placements.

Pure planners: storage reads the facts (the placements held in the box acted
on, which messages the owner already holds in Supprimés), asks for a plan,
and carries it out in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from palais.mailbox.boxes import BoxRef, MoveOutcome, decide_expunge, decide_move
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.model import BoxKind, CommittedRecord, HeldPlacement

DELETED = "\\Deleted"


@dataclass(frozen=True, slots=True)
class Relocate:
    """The placement leaves its box for ``kind`` (both views), with these flags."""

    held: HeldPlacement
    kind: BoxKind
    origin: BoxKind | None
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A second placement of the same message, in ``kind`` (a COPY)."""

    held: HeldPlacement
    kind: BoxKind
    origin: BoxKind | None
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Purge:
    """The placement goes for good; the message too once nobody holds it."""

    held: HeldPlacement


Step = Relocate | Duplicate | Purge


@dataclass(frozen=True, slots=True)
class MovePlan:
    """What a MOVE or COPY does, message by message, in UID order."""

    steps: tuple[Step, ...]
    records: tuple[CommittedRecord, ...] = ()  # committed with the steps


@dataclass(frozen=True, slots=True)
class RemovalPlan:
    """What an EXPUNGE does: ``removed`` leave the box, each by one of ``steps``."""

    removed: tuple[int, ...]
    steps: tuple[Relocate | Purge, ...]
    records: tuple[CommittedRecord, ...] = ()  # committed with the steps


def plan_move(
    held: Sequence[HeldPlacement], dest: BoxRef, *, keep_source: bool = False
) -> MovePlan:
    """Delete to Supprimés, restore from it, or purge a draft; ``keep_source``: a copy.

    A message never changes dossier; a deleted draft is gone for good (a copy
    of one to Supprimés does nothing); a deleted message remembers where it
    came from, and only goes back there.
    """
    steps: list[Step] = []
    for h in sorted(held, key=lambda h: h.uid):
        place = h.placement
        if dest.dossier is not None and dest.dossier != place.dossier:
            raise CannotDoThat("That message belongs to another dossier")
        outcome = decide_move(place.kind, place.origin, dest.kind)
        if outcome is MoveOutcome.PURGE:
            if not keep_source:
                steps.append(Purge(h))
            continue
        origin = place.kind if outcome is MoveOutcome.DELETE else None
        keep = h.flags - {DELETED}
        step = Duplicate if keep_source else Relocate
        steps.append(step(h, dest.kind, origin, keep))
    return MovePlan(tuple(steps))


def plan_expunge(
    box: BoxRef,
    candidates: Sequence[HeldPlacement],
    already_in_trash: Collection[int],
    only: Collection[int] | None = None,
) -> RemovalPlan:
    """EXPUNGE of the entries flagged \\Deleted (among ``only`` if given).

    In Supprimés and Brouillons they are gone for good. Elsewhere nothing is
    lost: each goes to Supprimés, remembering where it came from, unless the
    owner already holds that message there (``already_in_trash``, message
    ids), a client having copied it there first.
    """
    doomed = sorted(
        (h for h in candidates if DELETED in h.flags and (only is None or h.uid in only)),
        key=lambda h: h.uid,
    )
    if not doomed:
        return RemovalPlan((), ())
    outcome = decide_expunge(box.kind)
    steps: list[Relocate | Purge] = []
    for h in doomed:
        if outcome is MoveOutcome.PURGE or h.placement.message_id in already_in_trash:
            steps.append(Purge(h))
        else:
            steps.append(Relocate(h, BoxKind.SUPPRIMES, h.placement.kind, h.flags - {DELETED}))
    return RemovalPlan(tuple(h.uid for h in doomed), tuple(steps))
