"""The five boxes of a dossier, their global views, and what may move where.

Every message an identity holds sits in one *placement*: a box kind
(Reçus, Envoyés, Supprimés, Brouillons, Accusés de réception), optionally a
dossier, and, once deleted, the kind it came from. Each placement shows in
two IMAP folders: the dossier's own box and the global view of that kind.
These rules decide what a move, an expunge or an append means; storage only
carries the decision out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from palais.mailbox.errors import CannotDoThat, NoSuchMailbox
from palais.mailbox.model import (
    ACCUSES,
    BROUILLONS,
    DELIMITER,
    ENVOYES,
    INBOX,
    SUPPRIMES,
    BoxKind,
    SpecialUse,
)

__all__ = [
    "DOSSIERS",
    "DOSSIER_KINDS",
    "DOSSIER_NUMBER",
    "GLOBAL_BOXES",
    "NUMBER_IN_TEXT",
    "SAISINES",
    "SAISINE_BOXES",
    "SAISINE_KINDS",
    "BoxKind",
    "BoxRef",
    "MoveOutcome",
    "boxes_for_dossier",
    "check_append",
    "decide_expunge",
    "decide_move",
    "parse_box_name",
]

DOSSIERS = "Dossiers"
DOSSIER_NUMBER = re.compile(r"^\d{4}-\d{7}$")
NUMBER_IN_TEXT = re.compile(r"\[(\d{4}-\d{7})\]")
SAISINES = "Saisines"

# The five boxes each dossier has; the saisine boxes are a lawyer's, outside dossiers.
DOSSIER_KINDS = (
    BoxKind.RECUS,
    BoxKind.ENVOYES,
    BoxKind.SUPPRIMES,
    BoxKind.BROUILLONS,
    BoxKind.ACCUSES,
)
SAISINE_KINDS = (BoxKind.SAISINE_ENREGISTREE, BoxKind.SAISINE_ENVOYEE, BoxKind.SAISINE_REJETEE)


GLOBAL_NAMES: dict[BoxKind, str] = {
    BoxKind.RECUS: INBOX,
    BoxKind.ENVOYES: ENVOYES,
    BoxKind.BROUILLONS: BROUILLONS,
    BoxKind.SUPPRIMES: SUPPRIMES,
    BoxKind.ACCUSES: ACCUSES,
    BoxKind.SAISINE_ENREGISTREE: f"{SAISINES}{DELIMITER}Enregistrées",
    BoxKind.SAISINE_ENVOYEE: f"{SAISINES}{DELIMITER}Envoyées",
    BoxKind.SAISINE_REJETEE: f"{SAISINES}{DELIMITER}Rejetées",
}
DOSSIER_NAMES: dict[BoxKind, str] = {
    BoxKind.RECUS: "Reçus",
    BoxKind.ENVOYES: ENVOYES,
    BoxKind.SUPPRIMES: SUPPRIMES,
    BoxKind.BROUILLONS: BROUILLONS,
    BoxKind.ACCUSES: ACCUSES,
}
SPECIAL_USE: dict[BoxKind, SpecialUse] = {
    BoxKind.ENVOYES: SpecialUse.SENT,
    BoxKind.BROUILLONS: SpecialUse.DRAFTS,
    BoxKind.SUPPRIMES: SpecialUse.TRASH,
}


@dataclass(frozen=True, slots=True)
class BoxRef:
    kind: BoxKind
    dossier: str | None  # None: the global view

    @property
    def name(self) -> str:
        if self.dossier is None:
            return GLOBAL_NAMES[self.kind]
        return DELIMITER.join((DOSSIERS, self.dossier, DOSSIER_NAMES[self.kind]))

    @property
    def special_use(self) -> SpecialUse | None:
        # Only the global views carry SPECIAL-USE: a client wants one Sent folder.
        return SPECIAL_USE.get(self.kind) if self.dossier is None else None


def is_inbox(name: str) -> bool:
    """INBOX in any ASCII case (RFC 3501 5.1); "ınbox" (dotless i) is another name."""
    return name.isascii() and name.upper() == INBOX


def parse_box_name(name: str) -> BoxRef:
    """The box a folder name designates; NoSuchMailbox if none."""
    if is_inbox(name):
        return BoxRef(BoxKind.RECUS, None)
    for kind, global_name in GLOBAL_NAMES.items():
        if name == global_name:
            return BoxRef(kind, None)
    parts = name.split(DELIMITER)
    if len(parts) == 3 and parts[0] == DOSSIERS and DOSSIER_NUMBER.match(parts[1]):
        for kind, leaf in DOSSIER_NAMES.items():
            if parts[2] == leaf:
                return BoxRef(kind, parts[1])
    raise NoSuchMailbox(f"No mailbox named {name}")


def boxes_for_dossier(number: str) -> list[BoxRef]:
    return [BoxRef(kind, number) for kind in DOSSIER_KINDS]


GLOBAL_BOXES = [BoxRef(kind, None) for kind in DOSSIER_KINDS]
# A lawyer's (palais.mailbox.saisine_flow): Saisines/Enregistrées, Envoyées, Rejetées.
SAISINE_BOXES = [BoxRef(kind, None) for kind in SAISINE_KINDS]


class MoveOutcome(enum.Enum):
    DELETE = "delete"  # to Supprimés, remembering where it came from
    RESTORE = "restore"  # back from Supprimés to where it came from
    PURGE = "purge"  # a draft deleted: gone for good, never in Supprimés


def decide_move(kind: BoxKind, origin: BoxKind | None, dest: BoxKind) -> MoveOutcome:
    if kind == dest:
        raise CannotDoThat("The message is already in that box")
    if kind in SAISINE_KINDS or dest in SAISINE_KINDS:
        return _saisine_move(kind, dest)
    if dest is BoxKind.SUPPRIMES:
        if kind is BoxKind.BROUILLONS:
            return MoveOutcome.PURGE
        if kind in (BoxKind.RECUS, BoxKind.ENVOYES):
            return MoveOutcome.DELETE
        raise CannotDoThat("Receipts cannot be deleted")
    if kind is BoxKind.SUPPRIMES:
        if dest == origin:
            return MoveOutcome.RESTORE
        where = GLOBAL_NAMES[origin] if origin else "its box"
        raise CannotDoThat(f"A deleted message can only be restored to {where}")
    raise CannotDoThat("Messages can only be deleted to Supprimés or restored from it")


def _saisine_move(kind: BoxKind, dest: BoxKind) -> MoveOutcome:
    """A saved or rejected saisine may be thrown away (for good, as a draft);
    otherwise saisines move by being sent and by the registry's decision."""
    if dest is BoxKind.SUPPRIMES and kind in _SAISINES_DISCARDED:
        return MoveOutcome.PURGE
    raise CannotDoThat(
        "A saisine moves between the Saisines boxes by being sent and by the registry's decision"
    )


_SAISINES_DISCARDED = (BoxKind.SAISINE_ENREGISTREE, BoxKind.SAISINE_REJETEE)


def decide_expunge(kind: BoxKind) -> MoveOutcome:
    """EXPUNGE purges in Supprimés and Brouillons (and a saved or rejected
    saisine); elsewhere it deletes to Supprimés."""
    if kind is BoxKind.SAISINE_ENVOYEE:
        raise CannotDoThat("A saisine sent stays in Saisines/Envoyées until the registry decides")
    if kind in (BoxKind.SUPPRIMES, BoxKind.BROUILLONS, *_SAISINES_DISCARDED):
        return MoveOutcome.PURGE
    if kind is BoxKind.ACCUSES:
        raise CannotDoThat("Receipts cannot be deleted")
    return MoveOutcome.DELETE


# Why APPEND cannot put a message in a box, in that box's words.
_NO_APPEND = {
    BoxKind.RECUS: (
        "Received mail only arrives from its sender through the gateway;"
        " it cannot be added with APPEND"
    ),
    BoxKind.ACCUSES: (
        "Receipts are issued and signed by the gateway; a receipt cannot be added"
        " with APPEND, it would be a forgery"
    ),
    BoxKind.SUPPRIMES: "Supprimés only takes the messages you delete",
    BoxKind.SAISINE_ENVOYEE: "A saisine enters Saisines/Envoyées by being sent to the juridiction",
    BoxKind.SAISINE_REJETEE: "A saisine enters Saisines/Rejetées by the registry's decision",
}


def check_append(kind: BoxKind) -> None:
    """Clients may save drafts and file their sent copies (and delete by APPEND
    to Supprimés: ``palais.mailbox.drafts``); nothing else."""
    if kind in (BoxKind.BROUILLONS, BoxKind.ENVOYES, BoxKind.SAISINE_ENREGISTREE):
        return
    raise CannotDoThat(_NO_APPEND[kind])
