"""Values of the mailbox domain: boxes, their entries, placements and events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class SpecialUse(enum.StrEnum):
    """RFC 6154 attributes of the standard boxes."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    TRASH = "\\Trash"


class BoxKind(enum.StrEnum):
    """The five boxes of a dossier (and their global views), then a lawyer's
    three saisine boxes, which belong to no dossier (``boxes.SAISINE_KINDS``)."""

    RECUS = "recus"
    ENVOYES = "envoyes"
    SUPPRIMES = "supprimes"
    BROUILLONS = "brouillons"
    ACCUSES = "accuses"
    SAISINE_ENREGISTREE = "saisine-enreg"  # saved, resumable
    SAISINE_ENVOYEE = "saisine-envoyee"  # awaiting the registry
    SAISINE_REJETEE = "saisine-rejetee"  # rejected: corrected and sent again


# Box names as a clerk knows them. The delimiter is "/".
INBOX = "INBOX"
ENVOYES = "Envoyés"
BROUILLONS = "Brouillons"
SUPPRIMES = "Supprimés"
ACCUSES = "Accusés de réception"
DELIMITER = "/"


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """A box as seen by its owner at one instant."""

    id: int
    name: str  # full Unicode name with "/" as delimiter, e.g. "Dossiers/2025-0000138/Reçus"
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    special_use: SpecialUse | None = None
    selectable: bool = True  # False for pure hierarchy nodes such as "Dossiers"
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """One message in one box: what SELECT needs, without the bytes."""

    uid: int
    flags: frozenset[str]
    modseq: int


class MessageRecord(NamedTuple):
    """An entry with the message's metadata (no bytes).

    A named tuple rather than a frozen dataclass: FETCH builds one per message
    of every page, and a frozen dataclass's constructor costs five times more.
    """

    uid: int
    flags: frozenset[str]
    modseq: int
    internaldate: datetime  # timezone-aware
    size: int
    blob: str  # SHA-256 hex of the exact bytes
    header_size: int = 0  # bytes of the header block including the blank line; 0 = unknown


class FlagMode(enum.Enum):
    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class StoreResult:
    updated: list[Entry]  # entries whose flags were written (new flags, new modseq)
    modified: list[int] = field(default_factory=list)  # UIDs refused by UNCHANGEDSINCE


@dataclass(frozen=True, slots=True)
class AppendResult:
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    uidvalidity: int  # of the destination
    source_uids: list[int]
    dest_uids: list[int]


class HeaderField(enum.Enum):
    """Header-based search keys that storage answers from its index."""

    SUBJECT = "subject"
    FROM = "from"
    TO = "to"
    CC = "cc"
    BCC = "bcc"
    MESSAGE_ID = "message-id"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one owner holds one message: a box kind, perhaps a dossier.

    A placement shows in two folders, the dossier's own box and the global
    view of its kind; ``origin`` is the kind a deleted message came from.
    """

    id: int
    message_id: int
    kind: BoxKind
    dossier: str | None
    origin: BoxKind | None = None


@dataclass(frozen=True, slots=True)
class HeldPlacement:
    """An entry of the box being acted on (its UID and flags there), with its placement."""

    uid: int
    flags: frozenset[str]
    placement: Placement


class CommittedRecord:
    """A domain value that must commit with the plan carrying it (say, an
    evidence log entry). Each concrete kind is a frozen dataclass deriving
    from this; storage knows how to write each kind it is given, and refuses
    (nothing commits) a kind it does not know."""

    __slots__ = ()


class EventKind(enum.StrEnum):
    """What happened to one entry of a box."""

    ARRIVED = "arrived"  # a new entry (IMAP: EXISTS)
    FLAGS_CHANGED = "flags-changed"  # its flags were written (IMAP: FETCH FLAGS)
    REMOVED = "removed"  # it left the box (IMAP: EXPUNGE)


@dataclass(frozen=True, slots=True)
class MailboxEvent:
    """What others watching the box must hear about."""

    mailbox_id: int
    kind: EventKind
    uid: int
    flags: frozenset[str] = frozenset()
    modseq: int = 0
