"""The mail store: boxes, entries and message bytes, behind ``MailAccess``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, func, insert, select, update

from palais.mailbox.errors import CannotDoThat, NoSuchMailbox
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary, header_size, summarize
from palais.mailbox.model import (
    ACCUSES,
    BROUILLONS,
    ENVOYES,
    INBOX,
    SUPPRIMES,
    AppendResult,
    CopyResult,
    Entry,
    FlagMode,
    HeaderField,
    MailboxEvent,
    MailboxInfo,
    MessageRecord,
    SpecialUse,
    StoreResult,
)
from palais.mailbox.ports import Unsubscribe
from palais.mailbox.routing import FilingPlan
from palais.storage import schema
from palais.storage.blobs import BlobLocation, BlobStore, sha256_hex
from palais.storage.hub import EventHub
from palais.storage.writer import CommitQueue, WriteContext

MB = schema.table(schema.Mailbox)
EN = schema.table(schema.Entry)
MS = schema.table(schema.Message)
BL = schema.table(schema.Blob)

STANDARD_BOXES: tuple[tuple[str, SpecialUse | None], ...] = (
    (INBOX, None),
    (ENVOYES, SpecialUse.SENT),
    (BROUILLONS, SpecialUse.DRAFTS),
    (SUPPRIMES, SpecialUse.TRASH),
    (ACCUSES, None),
)
_CHUNK = 500
_SEEN = "\\Seen"
_DELETED = "\\Deleted"
_FLAG_RE = re.compile(r"^\\?[^\s()\]{%*\"\\]+$")


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def decode_flags(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _chunks(items: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _new_uidvalidity() -> int:
    # Seconds since the epoch: grows across re-creations, fits in 32 bits until 2106.
    return int(datetime.now(UTC).timestamp()) & 0xFFFFFFFF


def ensure_standard_boxes(conn: Connection, owner: str) -> None:
    existing = set(conn.execute(select(MB.c.name).where(MB.c.owner == owner)).scalars())
    for name, use in STANDARD_BOXES:
        if name not in existing:
            conn.execute(
                insert(MB).values(
                    owner=owner,
                    name=name,
                    special_use=use.value if use else None,
                    uidvalidity=_new_uidvalidity(),
                    uidnext=1,
                    highestmodseq=1,
                )
            )


@dataclass(frozen=True, slots=True)
class FiledMessage:
    message_id: int
    sha256: str
    size: int
    uids: dict[str, int]  # "owner/box" -> uid


def _allocate(conn: Connection, mailbox_id: int, count: int) -> tuple[int, int, int]:
    """Reserve ``count`` UIDs and a new modseq; returns (first uid, modseq, uidvalidity)."""
    conn.execute(
        update(MB)
        .where(MB.c.id == mailbox_id)
        .values(uidnext=MB.c.uidnext + count, highestmodseq=MB.c.highestmodseq + 1)
    )
    row = conn.execute(
        select(MB.c.uidnext, MB.c.highestmodseq, MB.c.uidvalidity).where(MB.c.id == mailbox_id)
    ).one()
    return int(row.uidnext) - count, int(row.highestmodseq), int(row.uidvalidity)


def _bump_modseq(conn: Connection, mailbox_id: int) -> int:
    conn.execute(
        update(MB).where(MB.c.id == mailbox_id).values(highestmodseq=MB.c.highestmodseq + 1)
    )
    return int(conn.execute(select(MB.c.highestmodseq).where(MB.c.id == mailbox_id)).scalar_one())


def _store_blob(conn: Connection, sha: str, where: BlobLocation) -> None:
    res = conn.execute(update(BL).where(BL.c.sha256 == sha).values(refcount=BL.c.refcount + 1))
    if res.rowcount == 0:
        conn.execute(
            insert(BL).values(
                sha256=sha,
                segment=where.segment,
                offset=where.offset,
                length=where.length,
                refcount=1,
            )
        )


def _insert_message(
    conn: Connection,
    ctx: WriteContext,
    data: bytes,
    summary: MessageSummary,
    *,
    internaldate: datetime,
    sender: str,
    fingerprint: str,
    dossier_id: int | None,
) -> tuple[int, str]:
    sha = sha256_hex(data)
    _store_blob(conn, sha, ctx.locations[sha])
    res = conn.execute(
        insert(MS).values(
            blob=sha,
            size=len(data),
            header_size=summary.header_size,
            internaldate=internaldate,
            sent_date=summary.sent_date,
            message_id=summary.message_id,
            subject=summary.subject,
            from_addr=summary.from_addr,
            to_addr=summary.to_addr,
            cc_addr=summary.cc_addr,
            bcc_addr=summary.bcc_addr,
            sender=sender,
            sender_fingerprint=fingerprint,
            dossier_id=dossier_id,
        )
    )
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0]), sha


def _add_entries(
    conn: Connection,
    ctx: WriteContext,
    mailbox_id: int,
    items: Sequence[tuple[int, frozenset[str]]],
) -> tuple[list[int], int]:
    """File messages (message row id, flags) into a box; returns (uids, uidvalidity)."""
    first, modseq, uidvalidity = _allocate(conn, mailbox_id, len(items))
    rows = []
    uids = []
    for i, (message_id, flags) in enumerate(items):
        uid = first + i
        uids.append(uid)
        rows.append(
            {
                "mailbox_id": mailbox_id,
                "uid": uid,
                "message_id": message_id,
                "flags": encode_flags(flags),
                "modseq": modseq,
            }
        )
        ctx.events.append(MailboxEvent(mailbox_id, "exists", uid, flags, modseq))
    if rows:
        conn.execute(insert(EN), rows)
    return uids, uidvalidity


def _release_messages(conn: Connection, ctx: WriteContext, message_ids: set[int]) -> None:
    """Delete messages no box shows any more, and their bytes if no message shares them."""
    for mid in message_ids:
        still = conn.execute(select(EN.c.uid).where(EN.c.message_id == mid).limit(1)).first()
        if still is not None:
            continue
        sha = conn.execute(select(MS.c.blob).where(MS.c.id == mid)).scalar_one()
        conn.execute(delete(MS).where(MS.c.id == mid))
        conn.execute(update(BL).where(BL.c.sha256 == sha).values(refcount=BL.c.refcount - 1))
        blob = conn.execute(
            select(BL.c.refcount, BL.c.segment, BL.c.offset, BL.c.length).where(BL.c.sha256 == sha)
        ).one()
        if blob.refcount <= 0:
            conn.execute(delete(BL).where(BL.c.sha256 == sha))
            ctx.erase_after_commit.append(BlobLocation(blob.segment, blob.offset, blob.length))


class MailStore:
    """Implements ``palais.mailbox.ports.MailAccess`` on SQL plus the pack store."""

    def __init__(
        self, reader: Engine, writer: CommitQueue, blobs: BlobStore, hub: EventHub
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._blobs = blobs
        self._hub = hub
        self._owners: dict[int, str] = {}
        self._box_ids: dict[tuple[str, str], int] = {}

    # -- helpers -------------------------------------------------------------

    def _read(self, fn: Callable[[Connection], Any]) -> Any:
        with self._reader.connect() as conn:
            return fn(conn)

    def _check_owner(self, who: Identity, mailbox_id: int) -> None:
        owner = self._owners.get(mailbox_id)
        if owner is None:
            owner = self._read(
                lambda c: c.execute(select(MB.c.owner).where(MB.c.id == mailbox_id)).scalar()
            )
            if owner is None:
                raise NoSuchMailbox()
            self._owners[mailbox_id] = owner
        if owner != who.mailbox_owner:
            raise NoSuchMailbox(reason=f"{who.address} asked for box {mailbox_id} of {owner}")

    def _box_id(self, conn: Connection, owner: str, name: str) -> int:
        key = (owner, name)
        box = self._box_ids.get(key)
        if box is None:
            box = conn.execute(
                select(MB.c.id).where(MB.c.owner == owner, MB.c.name == name)
            ).scalar()
            if box is None:
                raise NoSuchMailbox(f"No mailbox named {name}")
            self._box_ids[key] = box
        return box

    def _infos(self, conn: Connection, owner: str, name: str | None = None) -> list[MailboxInfo]:
        q = select(MB).where(MB.c.owner == owner)
        if name is not None:
            q = q.where(MB.c.name == name)
        boxes = conn.execute(q.order_by(MB.c.id)).all()
        if not boxes:
            return []
        unseen_expr = func.sum(case((EN.c.flags.like("%\\Seen%", escape="!"), 0), else_=1))
        counts = {
            r.mailbox_id: (int(r.n), int(r.unseen or 0))
            for r in conn.execute(
                select(EN.c.mailbox_id, func.count().label("n"), unseen_expr.label("unseen"))
                .where(EN.c.mailbox_id.in_([b.id for b in boxes]))
                .group_by(EN.c.mailbox_id)
            )
        }
        return [
            MailboxInfo(
                id=b.id,
                name=b.name,
                uidvalidity=int(b.uidvalidity),
                uidnext=int(b.uidnext),
                highestmodseq=int(b.highestmodseq),
                messages=counts.get(b.id, (0, 0))[0],
                unseen=counts.get(b.id, (0, 0))[1],
                special_use=SpecialUse(b.special_use) if b.special_use else None,
            )
            for b in boxes
        ]

    # -- MailAccess ----------------------------------------------------------

    async def list_mailboxes(self, who: Identity) -> list[MailboxInfo]:
        infos: list[MailboxInfo] = self._read(lambda c: self._infos(c, who.mailbox_owner))
        return infos

    async def mailbox(self, who: Identity, name: str) -> MailboxInfo:
        if name.upper() == INBOX:
            name = INBOX
        infos: list[MailboxInfo] = self._read(lambda c: self._infos(c, who.mailbox_owner, name))
        if not infos:
            raise NoSuchMailbox(f"No mailbox named {name}")
        return infos[0]

    async def entries(self, who: Identity, mailbox_id: int) -> list[Entry]:
        self._check_owner(who, mailbox_id)
        rows = self._read(
            lambda c: c.execute(
                select(EN.c.uid, EN.c.flags, EN.c.modseq)
                .where(EN.c.mailbox_id == mailbox_id)
                .order_by(EN.c.uid)
            ).all()
        )
        return [Entry(int(r.uid), decode_flags(r.flags), int(r.modseq)) for r in rows]

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        self._check_owner(who, mailbox_id)
        wanted = sorted(set(uids))

        def run(conn: Connection) -> list[MessageRecord]:
            out: list[MessageRecord] = []
            for part in _chunks(wanted):
                rows = conn.execute(
                    select(
                        EN.c.uid,
                        EN.c.flags,
                        EN.c.modseq,
                        MS.c.internaldate,
                        MS.c.size,
                        MS.c.blob,
                        MS.c.header_size,
                    )
                    .join(MS, MS.c.id == EN.c.message_id)
                    .where(EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part))
                    .order_by(EN.c.uid)
                ).all()
                for r in rows:
                    when = r.internaldate
                    if when.tzinfo is None:  # SQLite drops the zone; we store UTC
                        when = when.replace(tzinfo=UTC)
                    out.append(
                        MessageRecord(
                            uid=int(r.uid),
                            flags=decode_flags(r.flags),
                            modseq=int(r.modseq),
                            internaldate=when,
                            size=int(r.size),
                            blob=r.blob,
                            header_size=int(r.header_size),
                        )
                    )
            return out

        records: list[MessageRecord] = self._read(run)
        return records

    def _location(self, sha: str) -> BlobLocation:
        row = self._read(
            lambda c: c.execute(
                select(BL.c.segment, BL.c.offset, BL.c.length).where(BL.c.sha256 == sha)
            ).first()
        )
        if row is None:
            raise NoSuchMailbox("That message is no longer available", reason=f"blob {sha} gone")
        return BlobLocation(row.segment, int(row.offset), int(row.length))

    async def read(self, blob: str) -> bytes:
        return self._blobs.read(self._location(blob), blob)

    async def read_header(self, blob: str, header_size: int) -> bytes:
        where = self._location(blob)
        return self._blobs.read(where, blob, length=header_size or where.length)

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        self._check_owner(who, mailbox_id)
        for flag in flags:
            if not _FLAG_RE.match(flag) or flag.lower() == "\\recent":
                raise CannotDoThat(f"Flag {flag} cannot be stored")
        wanted = sorted(set(uids))

        def work(conn: Connection, ctx: WriteContext) -> StoreResult:
            current: dict[int, tuple[frozenset[str], int]] = {}
            for part in _chunks(wanted):
                for r in conn.execute(
                    select(EN.c.uid, EN.c.flags, EN.c.modseq).where(
                        EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part)
                    )
                ):
                    current[int(r.uid)] = (decode_flags(r.flags), int(r.modseq))
            modified: list[int] = []
            changes: dict[int, frozenset[str]] = {}
            for uid, (old, modseq) in current.items():
                if unchanged_since is not None and modseq > unchanged_since:
                    modified.append(uid)
                    continue
                if mode is FlagMode.ADD:
                    new = old | flags
                elif mode is FlagMode.REMOVE:
                    new = old - flags
                else:
                    new = flags
                if new != old:
                    changes[uid] = new
            if not changes:
                return StoreResult(updated=[], modified=sorted(modified))
            modseq = _bump_modseq(conn, mailbox_id)
            updated: list[Entry] = []
            for uid, new in sorted(changes.items()):
                conn.execute(
                    update(EN)
                    .where(EN.c.mailbox_id == mailbox_id, EN.c.uid == uid)
                    .values(flags=encode_flags(new), modseq=modseq)
                )
                updated.append(Entry(uid, new, modseq))
                ctx.events.append(MailboxEvent(mailbox_id, "flags", uid, new, modseq))
            return StoreResult(updated=updated, modified=sorted(modified))

        return await self._writer.submit(work)

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        self._check_owner(who, mailbox_id)
        only = set(uids) if uids is not None else None

        def work(conn: Connection, ctx: WriteContext) -> list[int]:
            rows = conn.execute(
                select(EN.c.uid, EN.c.message_id, EN.c.flags).where(
                    EN.c.mailbox_id == mailbox_id, EN.c.flags.like("%\\Deleted%", escape="!")
                )
            ).all()
            doomed = [
                (int(r.uid), int(r.message_id))
                for r in rows
                if _DELETED in decode_flags(r.flags) and (only is None or int(r.uid) in only)
            ]
            if not doomed:
                return []
            doomed.sort()
            modseq = _bump_modseq(conn, mailbox_id)
            for part in _chunks([u for u, _ in doomed]):
                conn.execute(delete(EN).where(EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part)))
            for uid, _ in doomed:
                ctx.events.append(MailboxEvent(mailbox_id, "expunge", uid, modseq=modseq))
            _release_messages(conn, ctx, {m for _, m in doomed})
            return [u for u, _ in doomed]

        return await self._writer.submit(work)

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        owner = who.mailbox_owner
        box = self._read(lambda c: self._box_id(c, owner, _canonical(mailbox_name)))
        try:
            summary = summarize(data)
        except Exception:  # IMAP lets a client store any bytes; index what we can
            summary = MessageSummary(header_size(data), "", "", "", "", "", None, None, True)
        when = (internaldate or datetime.now(UTC)).astimezone(UTC)

        def work(conn: Connection, ctx: WriteContext) -> AppendResult:
            mid, _ = _insert_message(
                conn,
                ctx,
                data,
                summary,
                internaldate=when,
                sender=who.address,
                fingerprint=who.fingerprint,
                dossier_id=None,
            )
            uids, validity = _add_entries(conn, ctx, box, [(mid, flags)])
            return AppendResult(uidvalidity=validity, uid=uids[0])

        return await self._writer.submit(work, [data])

    async def _copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str, *, move: bool
    ) -> CopyResult:
        self._check_owner(who, mailbox_id)
        dest = self._read(lambda c: self._box_id(c, who.mailbox_owner, _canonical(dest_name)))
        if dest == mailbox_id and move:
            raise CannotDoThat("The message is already in that mailbox")
        wanted = sorted(set(uids))

        def work(conn: Connection, ctx: WriteContext) -> CopyResult:
            found: list[tuple[int, int, frozenset[str]]] = []
            for part in _chunks(wanted):
                found.extend(
                    (int(r.uid), int(r.message_id), decode_flags(r.flags))
                    for r in conn.execute(
                        select(EN.c.uid, EN.c.message_id, EN.c.flags).where(
                            EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part)
                        )
                    )
                )
            found.sort()
            if not found:
                validity = conn.execute(
                    select(MB.c.uidvalidity).where(MB.c.id == dest)
                ).scalar_one()
                return CopyResult(int(validity), [], [])
            new_uids, validity = _add_entries(conn, ctx, dest, [(m, f) for _, m, f in found])
            if move:
                modseq = _bump_modseq(conn, mailbox_id)
                src = [u for u, _, _ in found]
                for part in _chunks(src):
                    conn.execute(
                        delete(EN).where(EN.c.mailbox_id == mailbox_id, EN.c.uid.in_(part))
                    )
                for uid in src:
                    ctx.events.append(MailboxEvent(mailbox_id, "expunge", uid, modseq=modseq))
            return CopyResult(validity, [u for u, _, _ in found], new_uids)

        return await self._writer.submit(work)

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._copy(who, mailbox_id, uids, dest_name, move=False)

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._copy(who, mailbox_id, uids, dest_name, move=True)

    async def search_header(
        self, who: Identity, mailbox_id: int, field: HeaderField, text: str
    ) -> set[int]:
        self._check_owner(who, mailbox_id)
        column = {
            HeaderField.SUBJECT: MS.c.subject,
            HeaderField.FROM: MS.c.from_addr,
            HeaderField.TO: MS.c.to_addr,
            HeaderField.CC: MS.c.cc_addr,
            HeaderField.BCC: MS.c.bcc_addr,
            HeaderField.MESSAGE_ID: MS.c.message_id,
        }[field]
        pattern = (
            "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        rows = self._read(
            lambda c: (
                c.execute(
                    select(EN.c.uid)
                    .join(MS, MS.c.id == EN.c.message_id)
                    .where(
                        EN.c.mailbox_id == mailbox_id, func.lower(column).like(pattern, escape="\\")
                    )
                )
                .scalars()
                .all()
            )
        )
        return {int(u) for u in rows}

    async def search_sent(
        self, who: Identity, mailbox_id: int, since: date | None, before: date | None
    ) -> set[int]:
        self._check_owner(who, mailbox_id)
        conds = [EN.c.mailbox_id == mailbox_id, MS.c.sent_date.is_not(None)]
        # Dates compare in UTC here; the header's own zone may shift a message
        # by a day near midnight, as Dovecot also does for SENT* keys.
        if since is not None:
            conds.append(MS.c.sent_date >= datetime.combine(since, time(), tzinfo=UTC))
        if before is not None:
            conds.append(MS.c.sent_date < datetime.combine(before, time(), tzinfo=UTC))
        rows = self._read(
            lambda c: (
                c.execute(select(EN.c.uid).join(MS, MS.c.id == EN.c.message_id).where(and_(*conds)))
                .scalars()
                .all()
            )
        )
        return {int(u) for u in rows}

    def subscribe(self, mailbox_id: int, listener: Callable[[MailboxEvent], None]) -> Unsubscribe:
        return self._hub.subscribe(mailbox_id, listener)

    # -- delivery ------------------------------------------------------------

    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
    ) -> FiledMessage:
        """Store an accepted message in every box of the plan; durable on return."""
        boxes = self._read(
            lambda c: [(d, self._box_id(c, d.owner, d.box)) for d in plan.destinations]
        )
        dossier_id: int | None = None
        if plan.dossier is not None:
            dossier_id = self._read(
                lambda c: c.execute(
                    select(schema.table(schema.Dossier).c.id).where(
                        schema.table(schema.Dossier).c.number == plan.dossier
                    )
                ).scalar()
            )
        now = datetime.now(UTC)

        def work(conn: Connection, ctx: WriteContext) -> FiledMessage:
            mid, sha = _insert_message(
                conn,
                ctx,
                data,
                summary,
                internaldate=now,
                sender=who.address,
                fingerprint=who.fingerprint,
                dossier_id=dossier_id,
            )
            uids: dict[str, int] = {}
            for dest, box in boxes:
                got, _ = _add_entries(conn, ctx, box, [(mid, dest.flags)])
                uids[f"{dest.owner}/{dest.box}"] = got[0]
            return FiledMessage(mid, sha, len(data), uids)

        return await self._writer.submit(work, [data])


def _canonical(name: str) -> str:
    return INBOX if name.upper() == INBOX else name
