"""Carrying plans out: placements, their entries in both views, UIDs and MODSEQs.

Nothing here decides a rule. The domain's planners (``palais.mailbox``)
say what moves, what goes and which flags change; these functions read the
facts the planners need and carry the plans out inside the writer's
transaction, allocating UIDs and MODSEQs and recording the events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from palais.mailbox.boxes import GLOBAL_BOXES, SAISINE_BOXES, BoxRef, boxes_for_dossier
from palais.mailbox.deletion import MovePlan, Purge, Relocate, RemovalPlan
from palais.mailbox.drafts import SupersededDrafts
from palais.mailbox.flags import FlaggedEntry, FlagPlan
from palais.mailbox.model import (
    BoxKind,
    CommittedRecord,
    Entry,
    EventKind,
    HeldPlacement,
    MailboxEvent,
    Placement,
)
from palais.storage.messages import release_messages
from palais.storage.rows import Rows, rows_for
from palais.storage.schema import Vanished, table
from palais.storage.sql import EN, MB, MS, PL, chunks, decode_flags, encode_flags
from palais.storage.writer import WriteContext

VN = table(Vanished)

# Writes one kind of record a plan carries (``FilingPlan.records``), in the plan's transaction.
RecordWriter = Callable[[Connection, WriteContext, Any], None]
RecordWriters = Mapping[type[CommittedRecord], RecordWriter]


def _new_uidvalidity() -> int:
    # Seconds since the epoch: grows across re-creations, fits in 32 bits until 2106.
    return int(datetime.now(UTC).timestamp()) & 0xFFFFFFFF


def ensure_boxes(
    conn: Connection, owner: str, dossier: str | None = None, *, saisines: bool = False
) -> None:
    """Create the global views of an owner, or the five boxes of one of its
    dossiers; ``saisines``: the owner's Saisines boxes (a lawyer's)."""
    refs = GLOBAL_BOXES if dossier is None else boxes_for_dossier(dossier)
    if saisines:
        refs = SAISINE_BOXES
    existing = set(conn.execute(select(MB.c.name).where(MB.c.owner == owner)).scalars())
    for ref in refs:
        if ref.name in existing:
            continue
        use = ref.special_use
        # Another node may create the same box at the same moment (a first
        # connection on two nodes): its row wins and this insert waits for it,
        # then does nothing, rather than failing the job on the unique key.
        rows_for(conn).run(
            "INSERT INTO mailbox (owner, name, special_use, kind, dossier, uidvalidity,"
            " uidnext, highestmodseq) VALUES (?, ?, ?, ?, ?, ?, 1, 1)"
            " ON CONFLICT (owner, name) DO NOTHING",
            (
                owner,
                ref.name,
                use.value if use else None,
                ref.kind.value,
                ref.dossier,
                _new_uidvalidity(),
            ),
        )


def bump_modseq(conn: Connection, mailbox_id: int) -> int:
    row = rows_for(conn).one(
        "UPDATE mailbox SET highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING highestmodseq",
        (mailbox_id,),
    )
    assert row is not None
    return int(row[0])


def _box_id(conn: Connection, owner: str, ref: BoxRef, cache: dict[Any, Any]) -> int | None:
    key = ("box", owner, ref.name)
    if key in cache:
        return int(cache[key])
    box = conn.execute(select(MB.c.id).where(MB.c.owner == owner, MB.c.name == ref.name)).scalar()
    if box is None:
        return None
    cache[key] = int(box)  # boxes are never renamed nor removed
    return int(box)


Holder = tuple[str, BoxKind, frozenset[str]]  # owner, box kind, flags


def _views(
    conn: Connection, ctx: WriteContext, owner: str, kind: BoxKind, dossier: str | None
) -> list[int]:
    """The boxes a placement lists its message in: the global view, and the
    dossier's when the owner has access to it."""
    refs = [BoxRef(kind, None)] + ([BoxRef(kind, dossier)] if dossier else [])
    return [box for ref in refs if (box := _box_id(conn, owner, ref, ctx.cache)) is not None]


def lock_boxes(
    conn: Connection, ctx: WriteContext, placements: Sequence[tuple[str | None, Sequence[Holder]]]
) -> None:
    """On PostgreSQL, the rows of the boxes these placements (dossier,
    holders) will list their messages in, locked now in one order, as
    ``place_messages`` would lock them: for a transaction that must lock
    them before something it needs first (the evidence log's head, which
    every transaction locks after the boxes). Nothing on SQLite, whose one
    writer is serial anyway."""
    if conn.dialect.name != "postgresql":
        return
    boxes = sorted(
        {
            box
            for dossier, holders in placements
            for owner, kind, _ in holders
            for box in _views(conn, ctx, owner, kind, dossier)
        }
    )
    if boxes:
        # NO KEY UPDATE: the lock the UIDs' UPDATE takes anyway; a plain FOR
        # UPDATE would also hold back every other transaction's foreign-key
        # check on these rows (an entry listed in one of the boxes).
        rows_for(conn).all(
            "SELECT id FROM mailbox WHERE id IN ("
            + ", ".join(["?"] * len(boxes))
            + ") ORDER BY id FOR NO KEY UPDATE",
            tuple(boxes),
        )


def place_all(
    conn: Connection,
    ctx: WriteContext,
    message_id: int,
    dossier: str | None,
    holders: Sequence[Holder],
    origin: BoxKind | None = None,
) -> list[dict[int, int]]:
    """Put a message in several owners' boxes, both views each, in three statements.

    Returns {mailbox id: uid} per holder. Filing one message touches four
    boxes; a statement per placement, per UID and per entry cost the writer
    thread a GIL handoff each, which is what limited SMTP ingest.
    """
    return place_messages(conn, ctx, [(message_id, dossier, holders)], origin)[0]


Placements = dict[tuple[int, str, str], int]
"""Placement row ids by (message id, owner, box kind)."""


def distinct_holders(messages: Sequence[tuple[int, str | None, Sequence[Holder]]]) -> bool:
    """Whether each message has one holder per owner and kind (what
    ``place_messages`` places together)."""
    return all(len({(o, k) for o, k, _ in holders}) == len(holders) for _, _, holders in messages)


def insert_placements(
    conn: Connection,
    messages: Sequence[tuple[int, str | None, Sequence[Holder]]],
    origin: BoxKind | None = None,
) -> Placements:
    """The placement rows of ``place_messages`` (one holder per owner and
    kind), in one statement. They lock no mailbox: on PostgreSQL a batch
    makes them before it locks its boxes, so another node's batch does not
    wait for them."""
    if not any(holders for _, _, holders in messages):
        return {}
    placed = rows_for(conn).all(*_placement_rows(messages, origin))
    return {(int(mid), str(owner), str(kind)): int(pid) for pid, owner, mid, kind in placed}


def _placement_rows(
    messages: Sequence[tuple[int, str | None, Sequence[Holder]]], origin: BoxKind | None
) -> tuple[str, tuple[object, ...]]:
    """The statement inserting the placement rows of ``messages`` (returning
    their id, owner, message and kind), and its parameters."""
    flat = [(mid, dossier, h) for mid, dossier, holders in messages for h in holders]
    return (
        "INSERT INTO placement (owner, message_id, kind, dossier, origin) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?)"] * len(flat))
        + " RETURNING id, owner, message_id, kind",
        tuple(
            value
            for mid, dossier, (owner, kind, _) in flat
            for value in (owner, mid, kind.value, dossier, origin.value if origin else None)
        ),
    )


def place_messages(
    conn: Connection,
    ctx: WriteContext,
    messages: Sequence[tuple[int, str | None, Sequence[Holder]]],
    origin: BoxKind | None = None,
    placements: Placements | None = None,
) -> list[list[dict[int, int]]]:
    """``place_all`` for several messages (distinct ids) in the same three
    statements: a batch's receipt mails. Several messages in one box get
    consecutive UIDs and MODSEQs, in the order given. ``placements``: the
    placement rows, when ``insert_placements`` made them already."""
    if not distinct_holders(messages):
        # One placement per owner and kind: a repeated holder is placed alone.
        assert placements is None, "placements made ahead are for one holder per owner and kind"
        return [
            [
                r
                for h in holders
                for r in place_messages(conn, ctx, [(mid, dossier, [h])], origin)[0]
            ]
            for mid, dossier, holders in messages
        ]
    rows = rows_for(conn)
    out: list[list[dict[int, int]]] = [[{} for _ in holders] for _, _, holders in messages]
    # On PostgreSQL the placement rows go in with the entries (one round
    # trip), unless made ahead.
    pg = conn.dialect.name == "postgresql"
    made_here = pg and placements is None
    placement_of: Placements = {}
    if not made_here:
        placement_of = (
            insert_placements(conn, messages, origin) if placements is None else placements
        )
    if not any(holders for _, _, holders in messages):
        return out
    targets: list[_Target] = []
    for index, (mid, dossier, holders) in enumerate(messages):
        for held, (owner, kind, flags) in enumerate(holders):
            for box in _views(conn, ctx, owner, kind, dossier):
                placement = 0 if made_here else placement_of[mid, owner, kind.value]
                targets.append((index, held, box, placement, flags))
    if not targets:
        if made_here:  # placed where no box lists them (yet)
            insert_placements(conn, messages, origin)
        return out
    counts: dict[int, int] = {}
    for target in targets:
        counts[target[2]] = counts.get(target[2], 0) + 1
    if pg:
        entries = _entries_together(rows, messages, targets, counts, made_here, origin)
    else:
        entries = _entries(rows, messages, targets, counts)
    for index, held, box, _, _, uid, _ in entries:
        out[index][held][box] = uid
    for _, _, box, _, flags, uid, modseq in entries:
        ctx.events.append(MailboxEvent(box, EventKind.ARRIVED, uid, flags, modseq))
    return out


# message index, holder index, box, placement, flags
_Target = tuple[int, int, int, int, frozenset[str]]
# the same, then the entry's UID and MODSEQ
_Entry = tuple[int, int, int, int, frozenset[str], int, int]


def _numbered(targets: Sequence[_Target], given: dict[int, tuple[int, int]]) -> list[_Entry]:
    """Each target's UID and MODSEQ, from the first each box gives out: a
    box's entries take consecutive ones, in the order of ``targets``."""
    next_of = {box: list(first) for box, first in given.items()}
    entries: list[_Entry] = []
    for index, held, box, placement, flags in targets:
        uid, modseq = next_of[box]
        next_of[box] = [uid + 1, modseq + 1]
        entries.append((index, held, box, placement, flags, uid, modseq))
    return entries


def _entries(
    rows: Rows,
    messages: Sequence[tuple[int, str | None, Sequence[Holder]]],
    targets: Sequence[_Target],
    counts: dict[int, int],
) -> list[_Entry]:
    """The boxes' UIDs allocated, then the entries inserted: two statements."""
    boxes = tuple(counts)
    marks = ", ".join(["?"] * len(boxes))
    if len(boxes) == len(targets):  # the usual filing: one entry per box
        allocated = rows.all(
            "UPDATE mailbox SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
            f" WHERE id IN ({marks}) RETURNING id, uidnext, highestmodseq",
            boxes,
        )
    else:
        step = "CASE id " + " ".join(["WHEN ? THEN CAST(? AS BIGINT)"] * len(boxes)) + " END"
        steps = tuple(v for box in boxes for v in (box, counts[box]))
        allocated = rows.all(
            f"UPDATE mailbox SET uidnext = uidnext + {step},"
            f" highestmodseq = highestmodseq + {step}"
            f" WHERE id IN ({marks}) RETURNING id, uidnext, highestmodseq",
            steps + steps + boxes,
        )
    # The first UID and MODSEQ each box gives out.
    entries = _numbered(
        targets,
        {
            int(box): (int(uidnext) - counts[int(box)], int(modseq) - counts[int(box)] + 1)
            for box, uidnext, modseq in allocated
        },
    )
    rows.run(
        "INSERT INTO entry (mailbox_id, uid, message_id, placement_id, flags, modseq) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(entries)),
        tuple(
            value
            for (index, _, box, placement, flags, uid, modseq) in entries
            for value in (box, uid, messages[index][0], placement, encode_flags(flags), modseq)
        ),
    )
    return entries


def _entries_together(
    rows: Rows,
    messages: Sequence[tuple[int, str | None, Sequence[Holder]]],
    targets: Sequence[_Target],
    counts: dict[int, int],
    made_here: bool,
    origin: BoxKind | None,
) -> list[_Entry]:
    """``_entries`` in one statement (PostgreSQL's data-modifying WITH): the
    entries take their UIDs from the boxes' update in the server, and when
    ``made_here`` their placement rows (``origin``) are inserted too. A batch
    holds its boxes' locks meanwhile, and a round trip is most of each
    statement."""
    boxes = sorted(counts)  # the boxes' rows locked in one order
    params: list[object] = []
    clauses: list[str] = []
    if made_here:
        placing, placed = _placement_rows(messages, origin)
        clauses.append(f"p AS ({placing})")
        params += placed
    clauses.append(
        "u AS (UPDATE mailbox SET uidnext = uidnext + s.n,"
        " highestmodseq = highestmodseq + s.n FROM (VALUES "
        + ", ".join(["(CAST(? AS INTEGER), CAST(? AS BIGINT))"] * len(boxes))
        + ") AS s (id, n) WHERE mailbox.id = s.id"
        " RETURNING mailbox.id, mailbox.uidnext - s.n AS uid,"
        " mailbox.highestmodseq - s.n + 1 AS modseq)"
    )
    params += (v for box in boxes for v in (box, counts[box]))
    # Each entry: its box, its rank among the box's new entries, its message,
    # its placement (its id, or its owner and kind when made here), its flags.
    rank: dict[int, int] = {}
    values: list[object] = []
    for index, held, box, placement, flags in targets:
        k = rank.get(box, 0)
        rank[box] = k + 1
        mid, _, holders = messages[index]
        if not made_here:
            values += (box, k, mid, placement, encode_flags(flags))
        else:
            owner, kind, _ = holders[held]
            values += (box, k, mid, owner, kind.value, encode_flags(flags))
    marks = "CAST(? AS INTEGER), CAST(? AS BIGINT), CAST(? AS INTEGER), "
    if not made_here:
        row, columns, placement_id, joined = (
            f"({marks}CAST(? AS INTEGER), CAST(? AS TEXT))",
            "(box, k, message, placement, flags)",
            "v.placement",
            "",
        )
    else:
        row, columns, placement_id, joined = (
            f"({marks}CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT))",
            "(box, k, message, owner, kind, flags)",
            "p.id",
            " JOIN p ON p.message_id = v.message AND p.owner = v.owner AND p.kind = v.kind",
        )
    clauses.append(
        "e AS (INSERT INTO entry (mailbox_id, uid, message_id, placement_id, flags, modseq)"
        f" SELECT v.box, u.uid + v.k, v.message, {placement_id}, v.flags, u.modseq + v.k"
        f" FROM (VALUES {', '.join([row] * len(targets))}) AS v {columns}"
        f" JOIN u ON u.id = v.box{joined})"
    )
    params += values
    allocated = rows.all(
        "WITH " + ", ".join(clauses) + " SELECT id, uid, modseq FROM u", tuple(params)
    )
    return _numbered(targets, {int(box): (int(uid), int(modseq)) for box, uid, modseq in allocated})


def _unlist(conn: Connection, ctx: WriteContext, placement: int) -> None:
    """The placement's entries leave both views, and the placement goes."""
    rows = conn.execute(
        select(EN.c.mailbox_id, EN.c.uid).where(EN.c.placement_id == placement)
    ).all()
    gone: list[dict[str, int]] = []
    for r in rows:
        modseq = bump_modseq(conn, r.mailbox_id)
        conn.execute(delete(EN).where(EN.c.mailbox_id == r.mailbox_id, EN.c.uid == r.uid))
        ctx.events.append(
            MailboxEvent(int(r.mailbox_id), EventKind.REMOVED, int(r.uid), modseq=modseq)
        )
        gone.append({"mailbox_id": int(r.mailbox_id), "uid": int(r.uid), "modseq": modseq})
    if gone:  # what QRESYNC tells a client that knew them (RFC 7162 3.2.5.1)
        conn.execute(insert(VN), gone)
    conn.execute(delete(PL).where(PL.c.id == placement))


def drop_placement(conn: Connection, ctx: WriteContext, placement: Placement) -> None:
    """Remove a placement from both views; the message goes when nobody holds it."""
    _unlist(conn, ctx, placement.id)
    release_messages(conn, ctx, (placement.message_id,))


# -- facts the planners need ----------------------------------------------------


def _held_rows(conn: Connection, condition: Any) -> list[HeldPlacement]:
    rows = conn.execute(
        select(
            EN.c.uid,
            EN.c.flags,
            EN.c.placement_id,
            EN.c.message_id,
            PL.c.kind,
            PL.c.dossier,
            PL.c.origin,
        )
        .join(PL, PL.c.id == EN.c.placement_id)
        .where(condition)
    ).all()
    return [
        HeldPlacement(
            int(r.uid),
            decode_flags(r.flags),
            Placement(
                int(r.placement_id),
                int(r.message_id),
                BoxKind(r.kind),
                r.dossier,
                BoxKind(r.origin) if r.origin else None,
            ),
        )
        for r in rows
    ]


def held_copies(
    conn: Connection, owner: str, sha: str, message_id: str | None
) -> list[HeldPlacement]:
    """The owner's placements of the messages with these bytes or this Message-ID
    (one entry of each: the facts of a delete by APPEND to Supprimés)."""
    same = (
        MS.c.blob == sha if not message_id else or_(MS.c.blob == sha, MS.c.message_id == message_id)
    )
    messages = select(MS.c.id).where(same)
    found = _held_rows(conn, and_(PL.c.owner == owner, EN.c.message_id.in_(messages)))
    one: dict[int, HeldPlacement] = {}
    for held in found:
        one.setdefault(held.placement.id, held)
    return list(one.values())


def held_placements(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> list[HeldPlacement]:
    """The entries of these UIDs in the box, with their placements, in UID order."""
    out: list[HeldPlacement] = []
    for part in chunks(sorted(set(uids))):
        out.extend(_held_rows(conn, (EN.c.mailbox_id == mailbox_id) & EN.c.uid.in_(part)))
    out.sort(key=lambda h: h.uid)
    return out


def flagged_deleted(conn: Connection, mailbox_id: int) -> list[HeldPlacement]:
    """The box's entries whose flags mention \\Deleted (the planner checks the exact flag)."""
    return _held_rows(
        conn, (EN.c.mailbox_id == mailbox_id) & EN.c.flags.like("%\\Deleted%", escape="!")
    )


def held_in(conn: Connection, owner: str, kind: BoxKind, message_ids: Collection[int]) -> set[int]:
    """Which of these messages the owner holds in a box of ``kind``."""
    found: set[int] = set()
    for part in chunks(sorted(message_ids)):
        found.update(
            int(m)
            for m in conn.execute(
                select(PL.c.message_id).where(
                    PL.c.owner == owner, PL.c.kind == kind.value, PL.c.message_id.in_(part)
                )
            ).scalars()
        )
    return found


def messages_of(conn: Connection, placements: Sequence[int]) -> list[int]:
    """The messages these placements hold."""
    out: list[int] = []
    for part in chunks(sorted(set(placements))):
        marks = ", ".join("?" * len(part))
        out += [
            int(m)
            for (m,) in rows_for(conn).all(
                f"SELECT message_id FROM placement WHERE id IN ({marks})", tuple(part)
            )
        ]
    return out


def flagged_entries(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> list[FlaggedEntry]:
    out: list[FlaggedEntry] = []
    for part in chunks(sorted(set(uids))):
        out.extend(
            FlaggedEntry(int(r.uid), decode_flags(r.flags), int(r.modseq), int(r.placement_id))
            for r in conn.execute(
                select(EN.c.uid, EN.c.flags, EN.c.modseq, EN.c.placement_id).where(
                    EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part)
                )
            )
        )
    return out


# -- carrying plans out ---------------------------------------------------------


def carry_out_steps(
    conn: Connection,
    ctx: WriteContext,
    owner: str,
    plan: MovePlan | RemovalPlan,
    writers: RecordWriters,
) -> list[tuple[int, dict[int, int]]]:
    """Each step of a move or removal plan, then its records;
    (source UID, {box: new UID}) per step that placed."""
    out: list[tuple[int, dict[int, int]]] = []
    for step in plan.steps:
        held = step.held.placement
        if isinstance(step, Purge):
            drop_placement(conn, ctx, held)
            continue
        if isinstance(step, Relocate):
            _unlist(conn, ctx, held.id)
        holder = [(owner, step.kind, step.flags)]
        placed = place_all(conn, ctx, held.message_id, held.dossier, holder, step.origin)
        out.append((step.held.uid, placed[0]))
    write_records(conn, ctx, writers, plan.records)
    return out


def carry_out_flags(
    conn: Connection, ctx: WriteContext, mailbox_id: int, plan: FlagPlan, writers: RecordWriters
) -> list[Entry]:
    """Write each change in the box acted on and in the placement's other view.

    One MODSEQ per box for the whole plan; then the plan's records. Returns
    the box's updated entries.
    """
    write_records(conn, ctx, writers, plan.records)
    if not plan.changes:
        return []
    modseq = bump_modseq(conn, mailbox_id)
    updated: list[Entry] = []
    for change in plan.changes:
        conn.execute(
            update(EN)
            .where(EN.c.mailbox_id == mailbox_id, EN.c.uid == change.uid)
            .values(flags=encode_flags(change.flags), modseq=modseq)
        )
        updated.append(Entry(change.uid, change.flags, modseq))
        ctx.events.append(
            MailboxEvent(mailbox_id, EventKind.FLAGS_CHANGED, change.uid, change.flags, modseq)
        )
    flags_of = {c.placement: c.flags for c in plan.changes}
    others: list[tuple[int, int, int]] = []  # box, uid, placement
    for part in chunks(sorted(flags_of)):
        others.extend(
            (int(r.mailbox_id), int(r.uid), int(r.placement_id))
            for r in conn.execute(
                select(EN.c.mailbox_id, EN.c.uid, EN.c.placement_id).where(
                    EN.c.placement_id.in_(part), EN.c.mailbox_id != mailbox_id
                )
            )
        )
    modseq_of: dict[int, int] = {}
    for box, uid, placement in sorted(others):
        if box not in modseq_of:
            modseq_of[box] = bump_modseq(conn, box)
        flags = flags_of[placement]
        conn.execute(
            update(EN)
            .where(EN.c.mailbox_id == box, EN.c.uid == uid)
            .values(flags=encode_flags(flags), modseq=modseq_of[box])
        )
        ctx.events.append(MailboxEvent(box, EventKind.FLAGS_CHANGED, uid, flags, modseq_of[box]))
    return updated


def drop_superseded(conn: Connection, ctx: WriteContext, drafts: SupersededDrafts) -> None:
    """The owner's drafts (Brouillons, or saved saisines) with this Message-ID go."""
    found = rows_for(conn).all(
        # Through the Message-ID index first: the sender's placements grow.
        "SELECT id, message_id FROM placement WHERE message_id IN"
        " (SELECT id FROM message WHERE message_id = ?) AND owner = ? AND kind = ?",
        (drafts.message_id, drafts.owner, drafts.kind.value),
    )
    for pid, mid in found:
        drop_placement(conn, ctx, Placement(int(pid), int(mid), drafts.kind, None))


def write_records(
    conn: Connection,
    ctx: WriteContext,
    writers: RecordWriters,
    records: Sequence[CommittedRecord],
) -> None:
    """The records a plan carries, in its transaction; a kind with no writer fails it whole."""
    for record in records:
        writer = writers.get(type(record))
        if writer is None:
            raise TypeError(f"no writer for records of kind {type(record).__name__}")
        writer(conn, ctx, record)
