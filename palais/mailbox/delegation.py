"""Délégation (e-délégation): a lawyer lets staff act for them, and takes it back.

A lawyer (avocat) grants another account of the bar's community access to
all their dossiers or to some of them, to read only or to read and write:

- who may delegate: an active lawyer, for dossiers they take part in;
- who may receive: an active collaborateur (the lawyer's staff) or another
  active avocat (a colleague standing in); never oneself, never justice
  staff, court systems or operators;
- what it gives: the lawyer's dossier boxes over IMAP under
  ``Délégations/<lawyer's address>/`` (read-only unless the right is
  "write"), and with "write" sending for the lawyer (From: the lawyer,
  Sender: the delegate), filed in the lawyer's Envoyés, the receipt naming
  the delegate;
- several grants to one delegate add up: a dossier is covered by a grant
  of that dossier or by a grant of all dossiers, with the stronger right.

Pure rules: the directory's facts come in as values, decisions go out as
values (or ``DelegationRefused`` with a message safe to show).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from palais.mailbox.boxes import DOSSIER_NUMBER, BoxRef, parse_box_name
from palais.mailbox.enrolment import AccountFacts
from palais.mailbox.errors import NoSuchMailbox, NotAllowed, SenderMismatch
from palais.mailbox.evidence import Party, ReceiptOrder
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import DELIMITER, CommittedRecord

__all__ = [
    "DELEGATE_ROLES",
    "DELEGATIONS",
    "ActedFor",
    "Delegation",
    "DelegationRefused",
    "Grant",
    "Revocation",
    "Right",
    "acting_for",
    "decide_grant",
    "decide_revocation",
    "delegated_box",
    "delegated_name",
    "delegated_parents",
    "lawyers_shown",
    "receipt_for",
    "right_for",
    "sending_for",
    "shown_boxes",
]

#: The top folder under which a delegate sees the lawyers' dossiers.
DELEGATIONS: Final = "Délégations"
#: Who may receive a delegation: the lawyer's staff, or a colleague.
DELEGATE_ROLES: Final = frozenset({Role.COLLABORATEUR, Role.AVOCAT})
#: Who may grant one.
DELEGATING_ROLES: Final = frozenset({Role.AVOCAT})


class Right(enum.StrEnum):
    """What a delegation allows; the value is what the directory stores."""

    READ = "read"  # read the dossiers' boxes
    WRITE = "write"  # also flag, delete, save drafts and send for the lawyer


class DelegationRefused(NotAllowed):
    """A grant, a revocation or an act under a delegation that the rules refuse."""


@dataclass(frozen=True, slots=True)
class Delegation:
    """One grant in force: ``lawyer`` lets ``delegate`` act on ``dossier`` (None: all)."""

    lawyer: str  # address
    delegate: str  # address
    dossier: str | None
    right: Right
    granted_at: datetime
    lawyer_name: str = ""
    granted_by: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "from": self.lawyer,
            "to": self.delegate,
            "dossier": self.dossier,
            "dossiers": "all" if self.dossier is None else [self.dossier],
            "rights": self.right.value,
            "granted_at": self.granted_at.isoformat(),
            "granted_by": self.granted_by,
        }


# -- granting and revoking ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """What to write: one row per dossier (or one for all), replacing a weaker one."""

    lawyer: AccountFacts
    delegate: AccountFacts
    dossiers: tuple[str | None, ...]  # (None,) for all dossiers
    right: Right
    replaces: tuple[Delegation, ...]  # rows of the same scope whose right changes


def decide_grant(
    lawyer: AccountFacts | None,
    delegate: AccountFacts | None,
    *,
    lawyer_address: str,
    delegate_address: str,
    right: Right,
    dossiers: Sequence[str],
    lawyer_dossiers: Iterable[str],
    known_dossiers: Iterable[str],
    existing: Iterable[Delegation],
) -> Grant:
    """A grant from ``lawyer`` to ``delegate``, or ``DelegationRefused`` naming why.

    ``dossiers`` empty means all the lawyer's dossiers (present and future);
    ``lawyer_dossiers`` are those the lawyer takes part in, ``known_dossiers``
    those that exist among ``dossiers``; ``existing`` the grants in force
    from this lawyer to this delegate.
    """
    if lawyer is None:
        raise DelegationRefused(f"no account {lawyer_address!r}")
    if delegate is None:
        raise DelegationRefused(f"no account {delegate_address!r}")
    if lawyer.account_id == delegate.account_id:
        raise DelegationRefused(f"{lawyer.address} cannot delegate to themself")
    if lawyer.role not in DELEGATING_ROLES:
        raise DelegationRefused(
            f"{lawyer.address} is a {lawyer.role.value}: only a lawyer (avocat) delegates"
        )
    if not lawyer.active:
        raise DelegationRefused(f"{lawyer.address} is deactivated")
    if delegate.role not in DELEGATE_ROLES:
        raise DelegationRefused(
            f"{delegate.address} is a {delegate.role.value}: a lawyer delegates only to"
            " a collaborateur or another avocat"
        )
    if not delegate.active:
        raise DelegationRefused(f"{delegate.address} is deactivated")
    if DELIMITER in lawyer.address:
        # The address names the lawyer's folder: a "/" would split it.
        raise DelegationRefused(f"{lawyer.address} cannot be shown as a folder name")
    known = set(known_dossiers)
    theirs = set(lawyer_dossiers)
    for number in dossiers:
        if not DOSSIER_NUMBER.match(number):
            raise DelegationRefused(f"{number!r} is not a dossier number (YYYY-NNNNNNN)")
        if number not in known:
            raise DelegationRefused(f"no dossier {number}")
        if number not in theirs:
            raise DelegationRefused(f"{lawyer.address} takes no part in dossier {number}")
    scope: tuple[str | None, ...] = tuple(dict.fromkeys(dossiers)) or (None,)
    held = {d.dossier: d for d in existing}
    replaces: list[Delegation] = []
    wanted: list[str | None] = []
    for entry in scope:
        same = held.get(entry)
        if same is None:
            wanted.append(entry)
        elif same.right is not right:
            replaces.append(same)
            wanted.append(entry)
    if not wanted:
        what = "all dossiers" if scope == (None,) else "dossier " + ", ".join(map(str, scope))
        raise DelegationRefused(
            f"{delegate.address} already holds {right.value} on {what} of {lawyer.address}"
        )
    return Grant(lawyer, delegate, tuple(wanted), right, tuple(replaces))


@dataclass(frozen=True, slots=True)
class Revocation:
    lawyer: str
    delegate: str
    revoked: tuple[Delegation, ...]


def decide_revocation(
    lawyer: AccountFacts | None,
    delegate: AccountFacts | None,
    *,
    lawyer_address: str,
    delegate_address: str,
    dossiers: Sequence[str],
    existing: Sequence[Delegation],
) -> Revocation:
    """Which grants from ``lawyer`` to ``delegate`` end: all of them, or those of ``dossiers``."""
    if lawyer is None:
        raise DelegationRefused(f"no account {lawyer_address!r}")
    if delegate is None:
        raise DelegationRefused(f"no account {delegate_address!r}")
    if lawyer.account_id == delegate.account_id:
        raise DelegationRefused(f"{lawyer.address} cannot delegate to themself")
    if not existing:
        raise DelegationRefused(f"{lawyer.address} has delegated nothing to {delegate.address}")
    if not dossiers:
        return Revocation(lawyer.address, delegate.address, tuple(existing))
    held = {d.dossier: d for d in existing}
    revoked: list[Delegation] = []
    for number in dict.fromkeys(dossiers):
        found = held.get(number)
        if found is not None:
            revoked.append(found)
        elif None in held:
            raise DelegationRefused(
                f"{delegate.address} holds all dossiers of {lawyer.address}, not dossier"
                f" {number} alone: revoke the whole delegation (without --dossier)"
            )
        else:
            raise DelegationRefused(
                f"{lawyer.address} has not delegated dossier {number} to {delegate.address}"
            )
    return Revocation(lawyer.address, delegate.address, tuple(revoked))


# -- what a delegate may do ------------------------------------------------------


def right_for(held: Iterable[Delegation], lawyer: str, dossier: str | None) -> Right | None:
    """The strongest right ``held`` gives on ``lawyer``'s ``dossier`` (None: no access).

    ``dossier`` None asks about the lawyer's mail outside any dossier: only a
    grant of all dossiers covers it.
    """
    best: Right | None = None
    for d in held:
        if d.lawyer != lawyer or (d.dossier is not None and d.dossier != dossier):
            continue
        if best is None or d.right is Right.WRITE:
            best = d.right
    return best


def lawyers_shown(held: Iterable[Delegation]) -> list[str]:
    """The lawyers whose dossiers a delegate sees, in a stable order."""
    return sorted({d.lawyer for d in held})


def acting_for(who: Identity, lawyer: str) -> Identity:
    """The delegate acting on the lawyer's mailbox: still themself (their account,
    address and certificate, so that evidence and logs name them), the boxes the
    lawyer's, as a clerk acts on their service's."""
    return replace(who, mailbox_owner=lawyer)


# -- the folder tree ----------------------------------------------------------------


def delegated_name(lawyer: str, name: str) -> str:
    """The delegate's name for the lawyer's box ``name``:
    ``Délégations/<lawyer>/Dossiers/<number>/<box>``. The lawyer's address is
    stable (an account keeps it) and mUTF-7 carries it unchanged."""
    return DELIMITER.join((DELEGATIONS, lawyer, name))


def delegated_box(name: str) -> tuple[str, BoxRef] | None:
    """(lawyer, the lawyer's box) a delegated folder name designates; None if the
    name is not under ``Délégations/``. NoSuchMailbox for a name under it that
    names no dossier box (only dossiers are delegated, never the global views)."""
    parts = name.split(DELIMITER, 2)
    if len(parts) < 2 or parts[0] != DELEGATIONS:
        return None
    if len(parts) < 3:
        raise NoSuchMailbox(f"No mailbox named {name}")
    ref = parse_box_name(parts[2])
    if ref.dossier is None:
        raise NoSuchMailbox(f"No mailbox named {name}")
    return parts[1], ref


def shown_boxes(
    held: Sequence[Delegation], lawyer: str, boxes: Iterable[BoxRef]
) -> list[tuple[BoxRef, Right]]:
    """Of the lawyer's ``boxes``, those ``held`` shows, each with its right."""
    out: list[tuple[BoxRef, Right]] = []
    for ref in boxes:
        if ref.dossier is None:
            continue
        right = right_for(held, lawyer, ref.dossier)
        if right is not None:
            out.append((ref, right))
    return out


def delegated_parents(names: Iterable[str]) -> list[str]:
    """The hierarchy folders above delegated boxes (not selectable), in order."""
    parents: dict[str, None] = {}
    for name in names:
        parts = name.split(DELIMITER)
        # "Délégations/<lawyer>" is one level however many dots the address has.
        for i in range(1, len(parts)):
            parents[DELIMITER.join(parts[:i])] = None
    return list(parents)


# -- sending for a lawyer ------------------------------------------------------------


def sending_for(
    who: Identity, lawyer: str, held: Iterable[Delegation], dossier: str | None = None
) -> Right:
    """Check that ``who`` may send as ``lawyer`` (in ``dossier``, once known).

    SMTP's 5.7.1 when not: no delegation at all is a sender mismatch (as any
    other address not one's own), a delegation to read only or not covering
    the dossier is a refusal naming it.
    """
    grants = [d for d in held if d.lawyer == lawyer]
    if not grants:
        raise SenderMismatch(
            f"<{lawyer}> is not your address <{who.address}> and has not delegated to you",
            reason=f"{who.address} sent as {lawyer} without delegation",
        )
    if not any(d.right is Right.WRITE for d in grants):
        raise DelegationRefused(
            f"Your delegation from <{lawyer}> allows reading only",
            reason=f"{who.address} sent as {lawyer} under a read-only delegation",
        )
    if dossier is not None and right_for(grants, lawyer, dossier) is not Right.WRITE:
        raise DelegationRefused(
            f"Your delegation from <{lawyer}> does not allow sending in dossier {dossier}",
            reason=f"{who.address} sent as {lawyer} in {dossier}, not delegated",
        )
    return Right.WRITE


def check_sender_header(who: Identity, lawyer: str, senders: Sequence[str]) -> bool:
    """A message sent for ``lawyer`` says who sent it: its Sender is the delegate.

    True if the header is right, False if it is missing (the gateway adds
    it); refused if it names anyone else.
    """
    if not senders:
        return False
    if len(senders) == 1 and senders[0] == who.address:
        return True
    raise DelegationRefused(
        f"A message sent for <{lawyer}> must say Sender: <{who.address}>",
        reason=f"{who.address} sent for {lawyer} with Sender {', '.join(senders)!r}",
    )


def receipt_for(order: ReceiptOrder, lawyer: str, lawyer_name: str, who: Identity) -> ReceiptOrder:
    """The deposit receipt of a message sent for ``lawyer``: the lawyer is the
    sender (who did not act: no authentication), the delegate is named with the
    certificate they proved themself with; the lawyer's mailbox holds it."""
    plain = replace(who, mailbox_owner=who.address)
    return replace(
        order,
        sender=Party(lawyer, lawyer_name or lawyer, Role.AVOCAT.value),
        delegate=replace(Party.acting(plain), mailbox=lawyer),
    )


@dataclass(frozen=True, slots=True)
class ActedFor(CommittedRecord):
    """That a delegate acted for a lawyer ("X for Y"): written to the audit log in
    the transaction of the act itself."""

    delegate: str
    lawyer: str
    act: str  # "send", "flags", "expunge", "move", "copy", "append"
    dossier: str | None
    detail: Mapping[str, object] | None = None

    @property
    def text(self) -> str:
        return f"{self.delegate} for {self.lawyer}"
