"""SORT keys (RFC 5256 sections 2.1 and 3): base subject, first mailbox, sent date.

What a message sorts and threads on is read once from its header block and
kept per box (``BoxFacts``): a UID names the same message for as long as
the box keeps its UIDVALIDITY, so a repeated SORT or THREAD of a big box
costs a sort of kept keys, not a read of every header again.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from palais.gateway.imap.envelope import parse_addresses
from palais.gateway.imap.headers import find_body_start
from palais.gateway.imap.pacing import Pacer
from palais.gateway.imap.textsearch import decode_header_value
from palais.mailbox.identity import Identity
from palais.mailbox.model import MessageRecord
from palais.mailbox.ports import MailAccess

__all__ = [
    "SORT_KEYS",
    "BoxFacts",
    "FactTable",
    "SortFacts",
    "SortKey",
    "base_subject",
    "box_facts",
    "digest",
    "facts_of",
    "sort_uids",
]

SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})


@dataclass(frozen=True, slots=True)
class SortKey:
    name: str  # one of SORT_KEYS
    reverse: bool = False


class SortFacts(NamedTuple):
    """What one message sorts and threads on (keys already in i;ascii-casemap form)."""

    arrival: float  # INTERNALDATE, seconds since the epoch
    sent: float  # the Date header in UTC, or INTERNALDATE when it has none usable
    size: int
    subject: bytes  # base subject, UTF-8, ASCII letters upper-cased
    from_: bytes  # addr-mailbox of the first From address, upper-cased ASCII
    to: bytes
    cc: bytes
    reply: bool  # the subject carried "Re:", "Fwd:", "(fwd)" or "[fwd: ...]"
    message_id: str | None  # the first valid Message-ID, <> removed
    references: tuple[str, ...]  # References, else the first of In-Reply-To


# -- base subject (RFC 5256 section 2.1) ------------------------------------

_WSP = "[ \t]"
_BLOB = r"\[[^\[\]]*\]" + _WSP + "*"
_REFWD = "(?:re|fwd?)" + _WSP + "*(?:" + _BLOB + ")?:"
_LEADER = re.compile(f"(?:(?:{_BLOB})*{_REFWD})|{_WSP}+", re.IGNORECASE)
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])$", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)
_REFWD_IN_LEADER = re.compile(_REFWD, re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str) -> tuple[str, bool]:
    """The base subject of an already decoded Subject (steps 2 to 7 of the
    algorithm), and whether it was a reply or forward."""
    # (1) Tabs, continuations and runs of spaces become one space.
    text = _SPACES.sub(" ", subject)
    reply = False
    while True:
        # (2) Trailers "(fwd)" and white space, repeatedly.
        while True:
            m = _TRAILER.search(text)
            if m is None:
                break
            if m.group() != " " and m.group() != "\t":
                reply = True
            text = text[: m.start()]
        # (5) Steps (3) and (4) until neither removes anything.
        while True:
            changed = False
            # (3) Leaders: white space, or blobs then "re"/"fw"/"fwd" and ":".
            m = _LEADER.match(text)
            while m is not None and m.end() > 0:
                if _REFWD_IN_LEADER.search(m.group()):
                    reply = True
                text = text[m.end() :]
                changed = True
                m = _LEADER.match(text)
            # (4) A leading blob, if something other than space is left after it.
            m = _BLOB_PREFIX.match(text)
            if m is not None and text[m.end() :].strip(" \t"):
                text = text[m.end() :]
                changed = True
            if not changed:
                break
        # (6) "[fwd: ...]": unwrapped, then everything again.
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def _casemap(text: str) -> bytes:
    """i;ascii-casemap: octets compared, ASCII letters as upper case (RFC 4790 9.2)."""
    return text.encode("utf-8", "replace").upper()


# -- a message's facts --------------------------------------------------------

_MSG_ID = re.compile(rb"<([^<>]*)>")


def _ids(value: bytes | None) -> list[str]:
    """The message IDs of a header value, white space (folding) removed."""
    if not value:
        return []
    out: list[str] = []
    for m in _MSG_ID.finditer(value):
        text = re.sub(rb"[ \t\r\n]", b"", m.group(1))
        if text:
            out.append(text.decode("utf-8", "replace"))
    return out


_NOT_SIMPLE = re.compile(rb'["(\\\\:;]')
_SPACE = re.compile(rb"[ \t\r\n]+")


def _first_mailbox(value: bytes | None) -> bytes:
    """The addr-mailbox of the first address, as ENVELOPE shows it (a group's
    name for a group), unquoted; empty when there is none."""
    if not value:
        return b""
    if _NOT_SIMPLE.search(value) is None:
        # No quotes, comments, groups or routes (the usual list): the first
        # non-empty item, its angle address if it has a whole one.
        for item in value.split(b","):
            lt = item.find(b"<")
            if lt >= 0:
                gt = item.find(b">", lt)
                if gt < 0:
                    break  # a comma inside the angle brackets: read it in full below
                spec = item[lt + 1 : gt]
            else:
                spec = item
            spec = _SPACE.sub(b"", spec)
            if not spec and lt < 0:
                continue
            at = spec.rfind(b"@")
            return (spec if at < 0 else spec[:at]).upper()
        else:
            return b""
    parsed = parse_addresses(value)
    if not parsed:
        return b""
    first = parsed[0]
    assert isinstance(first, list)
    mailbox = first[2]
    if not isinstance(mailbox, bytes):
        return b""
    if mailbox.startswith(b'"') and mailbox.endswith(b'"') and len(mailbox) >= 2:
        mailbox = re.sub(rb"\\(.)", rb"\1", mailbox[1:-1])
    return mailbox.upper()


def _sent(value: bytes | None, fallback: float) -> float:
    if not value:
        return fallback
    try:
        when = email.utils.parsedate_to_datetime(value.decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return fallback
    if when is None or when.tzinfo is None:
        return fallback
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return fallback


_WANTED = re.compile(
    rb"^(subject|from|to|cc|date|message-id|references|in-reply-to)[ \t]*:"
    rb"([^\n]*(?:\n[ \t][^\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def _wanted_fields(header: bytes) -> dict[str, bytes]:
    """The first value of each field a sort or thread key reads, unfolded,
    as ``header_fields`` gives them (a field starts a line; the block ends at
    its first blank line)."""
    end = find_body_start(header, 0, len(header))
    first: dict[str, bytes] = {}
    for m in _WANTED.finditer(header, 0, end):
        name = m.group(1).decode("ascii").lower()
        if name not in first:
            first[name] = _FOLD.sub(b"", m.group(2)).strip(b" \t\r\n")
    return first


def facts_of(record: MessageRecord, header: bytes) -> SortFacts:
    """The sort and thread facts of one message from its header block."""
    first = _wanted_fields(header)
    arrival = record.internaldate.timestamp()
    subject_raw = first.get("subject")
    subject, reply = base_subject(decode_header_value(subject_raw) if subject_raw else "")
    ids = _ids(first.get("message-id"))
    references = _ids(first.get("references"))
    if not references:
        references = _ids(first.get("in-reply-to"))[:1]
    return SortFacts(
        arrival=arrival,
        sent=_sent(first.get("date"), arrival),
        size=record.size,
        subject=_casemap(subject),
        from_=_first_mailbox(first.get("from")),
        to=_first_mailbox(first.get("to")),
        cc=_first_mailbox(first.get("cc")),
        reply=reply,
        message_id=ids[0] if ids else None,
        references=tuple(references),
    )


# -- sorting --------------------------------------------------------------------

_POSITION = {
    "ARRIVAL": 0,
    "DATE": 1,
    "SIZE": 2,
    "SUBJECT": 3,
    "FROM": 4,
    "TO": 5,
    "CC": 6,
}


def _key_of(facts: SortFacts, name: str) -> float | int | bytes:
    value = facts[_POSITION[name]]
    assert isinstance(value, (float, int, bytes))
    return value


def sort_uids(uids: Sequence[int], facts: FactTable, keys: Sequence[SortKey]) -> list[int]:
    """``uids`` (in mailbox order) sorted on ``keys``; ties stay in mailbox
    order (RFC 5256 section 3), REVERSE included.

    One stable sort per key, the last key first: each later pass keeps the
    order of the earlier ones among equals.
    """
    order = list(uids)
    for key in reversed(keys):
        order.sort(key=facts.column(key.name).__getitem__, reverse=key.reverse)
    return order


class FactTable(dict[int, SortFacts]):
    """A box's facts by UID, with each sort key's column kept once built."""

    __slots__ = ("_columns",)

    def __init__(self) -> None:
        super().__init__()
        self._columns: dict[str, dict[int, float | int | bytes]] = {}

    def add(self, uid: int, facts: SortFacts) -> None:
        self[uid] = facts
        for name, column in self._columns.items():
            column[uid] = _key_of(facts, name)

    def column(self, name: str) -> dict[int, float | int | bytes]:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = {uid: _key_of(f, name) for uid, f in self.items()}
        return column


# -- the facts of a box, kept --------------------------------------------------

# Messages whose facts are kept, over all boxes (some 300 bytes each).
_BUDGET = 400_000
# Records asked for at a time while reading the facts of new messages.
_BATCH = 500


# Answers kept for a repeated SORT or THREAD, and their bytes over all of them.
_ANSWERS = 32
_ANSWER_BYTES = 32 * 1024 * 1024


def digest(uids: Sequence[int]) -> bytes:
    """A short fingerprint of a list of UIDs (what an answer was computed for)."""
    return hashlib.blake2b(array("I", uids).tobytes(), digest_size=16).digest()


class BoxFacts:
    """Facts of the boxes recently sorted or threaded, by box and UIDVALIDITY,
    and the last answers.

    An answer depends on nothing but the messages it was asked of (their
    facts never change) and how they are numbered: kept under a fingerprint
    of both, a repeated SORT or THREAD of an unchanged box is a look-up.
    """

    __slots__ = ("_answer_bytes", "answers", "boxes")

    def __init__(self) -> None:
        self.boxes: OrderedDict[int, tuple[int, FactTable]] = OrderedDict()
        self.answers: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._answer_bytes = 0

    def answer(self, key: tuple[object, ...]) -> bytes | None:
        found = self.answers.get(key)
        if found is not None:
            self.answers.move_to_end(key)
        return found

    def keep_answer(self, key: tuple[object, ...], answer: bytes) -> None:
        if len(answer) > _ANSWER_BYTES // 4:
            return
        old = self.answers.pop(key, None)
        if old is not None:
            self._answer_bytes -= len(old)
        self.answers[key] = answer
        self._answer_bytes += len(answer)
        while len(self.answers) > _ANSWERS or self._answer_bytes > _ANSWER_BYTES:
            _, dropped = self.answers.popitem(last=False)
            self._answer_bytes -= len(dropped)

    def table(self, box_id: int, uidvalidity: int) -> FactTable:
        kept = self.boxes.get(box_id)
        if kept is None or kept[0] != uidvalidity:
            kept = self.boxes[box_id] = (uidvalidity, FactTable())
        self.boxes.move_to_end(box_id)
        return kept[1]

    def trim(self) -> None:
        total = sum(len(t) for _, t in self.boxes.values())
        while total > _BUDGET and len(self.boxes) > 1:
            _, (_, dropped) = self.boxes.popitem(last=False)
            total -= len(dropped)

    async def of(
        self,
        access: MailAccess,
        who: Identity,
        box_id: int,
        uidvalidity: int,
        uids: Sequence[int],
        pacer: Pacer,
    ) -> FactTable:
        """The facts of ``uids`` (and of others kept): those not kept yet are
        read from the messages' header blocks."""
        table = self.table(box_id, uidvalidity)
        missing = [u for u in uids if u not in table]
        for i in range(0, len(missing), _BATCH):
            records = await access.records(who, box_id, missing[i : i + _BATCH])
            for record in records:
                header = await access.read_header(record.blob, record.header_size)
                table.add(record.uid, facts_of(record, header))
                await pacer.tick()
        if missing:
            self.trim()
        return table


_KEPT: weakref.WeakKeyDictionary[object, BoxFacts] = weakref.WeakKeyDictionary()


def box_facts(access: object) -> BoxFacts:
    """The kept facts of one store's boxes (shared by its sessions, on the event loop)."""
    kept = _KEPT.get(access)
    if kept is None:
        kept = _KEPT[access] = BoxFacts()
    return kept
