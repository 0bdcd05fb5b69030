"""Delegations in the directory: reading them, carrying out grants and revocations.

The rules are the domain's (``palais.mailbox.delegation``): this module reads
the facts a decision needs, writes what was decided with its audit event in
the caller's transaction, and answers "what does this delegate hold now?"
for the front-ends, from a cache that expires as the directory's identity
cache does (``Directory.TTL``): a revocation takes effect on every node
within seconds, without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select
from sqlalchemy.orm import aliased

from palais.mailbox.audit import AuditAction
from palais.mailbox.delegation import (
    ActedFor,
    Delegation,
    Grant,
    Revocation,
    Right,
    decide_grant,
    decide_revocation,
)
from palais.mailbox.identity import Identity
from palais.storage import audit, schema
from palais.storage.directory import Directory
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["Delegations", "write_acted_for"]

DL = schema.table(schema.Delegation)
AC = schema.table(schema.Account)
DO = schema.table(schema.Dossier)
PA = schema.table(schema.Participation)


def in_force(
    conn: Connection, *, lawyer: str | None = None, delegate: str | None = None
) -> list[Delegation]:
    """The delegations in force, of a lawyer and/or to a delegate, oldest first.

    A deactivated lawyer or delegate holds nothing: a deactivation ends what
    they granted and what they were granted without another step.
    """
    law = aliased(AC, name="law")
    dlg = aliased(AC, name="dlg")
    q = (
        select(
            law.c.address.label("lawyer"),
            law.c.display_name.label("lawyer_name"),
            dlg.c.address.label("delegate"),
            DO.c.number,
            DL.c.rights,
            DL.c.granted_at,
            DL.c.granted_by,
        )
        .join(law, law.c.id == DL.c.lawyer_id)
        .join(dlg, dlg.c.id == DL.c.delegate_id)
        .outerjoin(DO, DO.c.id == DL.c.dossier_id)
        .where(law.c.active.is_(True), dlg.c.active.is_(True))
        .order_by(DL.c.id)
    )
    if lawyer is not None:
        q = q.where(law.c.address == lawyer.strip().lower())
    if delegate is not None:
        q = q.where(dlg.c.address == delegate.strip().lower())
    return [
        Delegation(
            lawyer=r.lawyer,
            delegate=r.delegate,
            dossier=r.number,
            right=Right(r.rights),
            granted_at=_utc(r.granted_at),
            lawyer_name=r.lawyer_name,
            granted_by=r.granted_by,
        )
        for r in conn.execute(q)
    ]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _dossier_facts(
    conn: Connection, account_id: int | None, numbers: Sequence[str]
) -> tuple[set[str], set[str]]:
    """(the numbers that exist, those the account takes part in), among ``numbers``."""
    if not numbers:
        return set(), set()
    known = set(conn.execute(select(DO.c.number).where(DO.c.number.in_(numbers))).scalars())
    theirs: set[str] = set()
    if account_id is not None:
        theirs = set(
            conn.execute(
                select(DO.c.number)
                .join(PA, PA.c.dossier_id == DO.c.id)
                .where(PA.c.account_id == account_id, DO.c.number.in_(numbers))
            ).scalars()
        )
    return known, theirs


def grant(
    conn: Connection,
    lawyer: str,
    delegate: str,
    right: Right,
    dossiers: Sequence[str],
    *,
    actor: str,
) -> Grant:
    """Decide on the facts in this transaction and carry the grant out, audited."""
    law = Directory.account_by_address(conn, lawyer)
    dlg = Directory.account_by_address(conn, delegate)
    known, theirs = _dossier_facts(conn, law.account_id if law else None, dossiers)
    existing = in_force(conn, lawyer=law.address, delegate=dlg.address) if law and dlg else []
    plan = decide_grant(
        law,
        dlg,
        lawyer_address=lawyer.strip(),
        delegate_address=delegate.strip(),
        right=right,
        dossiers=dossiers,
        lawyer_dossiers=theirs,
        known_dossiers=known,
        existing=existing,
    )
    ids = dict(conn.execute(select(DO.c.number, DO.c.id).where(DO.c.number.in_(known))).all())
    now = datetime.now(UTC)
    for number in plan.dossiers:
        dossier_id = None if number is None else ids[number]
        conn.execute(
            delete(DL).where(
                DL.c.lawyer_id == plan.lawyer.account_id,
                DL.c.delegate_id == plan.delegate.account_id,
                DL.c.dossier_id.is_(None) if dossier_id is None else DL.c.dossier_id == dossier_id,
            )
        )
        conn.execute(
            insert(DL).values(
                lawyer_id=plan.lawyer.account_id,
                delegate_id=plan.delegate.account_id,
                dossier_id=dossier_id,
                rights=plan.right.value,
                granted_at=now,
                granted_by=actor,
            )
        )
    audit.record(
        conn,
        actor=actor,
        action=AuditAction.DELEGATION_GRANTED,
        subject=plan.lawyer.address,
        reason=f"{plan.delegate.address} for {plan.lawyer.address}",
        detail={
            "from": plan.lawyer.address,
            "to": plan.delegate.address,
            "dossiers": "all" if plan.dossiers == (None,) else list(plan.dossiers),
            "rights": plan.right.value,
            "replaced": [d.as_json() for d in plan.replaces],
        },
    )
    return plan


def revoke(
    conn: Connection, lawyer: str, delegate: str, dossiers: Sequence[str], *, actor: str
) -> Revocation:
    """Decide on the facts in this transaction and carry the revocation out, audited."""
    law = Directory.account_by_address(conn, lawyer)
    dlg = Directory.account_by_address(conn, delegate)
    existing = in_force(conn, lawyer=law.address, delegate=dlg.address) if law and dlg else []
    plan = decide_revocation(
        law,
        dlg,
        lawyer_address=lawyer.strip(),
        delegate_address=delegate.strip(),
        dossiers=dossiers,
        existing=existing,
    )
    assert law is not None and dlg is not None  # decide_revocation refused otherwise
    numbers = [d.dossier for d in plan.revoked if d.dossier is not None]
    ids = list(conn.execute(select(DO.c.id).where(DO.c.number.in_(numbers))).scalars())
    scope = [DL.c.dossier_id.in_(ids)] if ids else []
    if any(d.dossier is None for d in plan.revoked):
        scope.append(DL.c.dossier_id.is_(None))
    conn.execute(
        delete(DL).where(
            and_(
                DL.c.lawyer_id == law.account_id,
                DL.c.delegate_id == dlg.account_id,
                or_(*scope),
            )
        )
    )
    audit.record(
        conn,
        actor=actor,
        action=AuditAction.DELEGATION_REVOKED,
        subject=law.address,
        reason=f"{dlg.address} for {law.address}",
        detail={
            "from": law.address,
            "to": dlg.address,
            "revoked": [d.as_json() for d in plan.revoked],
        },
    )
    return plan


def write_acted_for(conn: Connection, ctx: WriteContext, record: ActedFor) -> None:
    """An ``ActedFor`` record of a plan: "X for Y" in the audit log, in the act's transaction."""
    detail: dict[str, object] = {"act": record.act, "dossier": record.dossier}
    if record.detail:
        detail.update(record.detail)
    if ctx.filed is not None:  # a filing: the message it filed
        detail["message"] = f"M{ctx.filed[0]}"
        detail["message_id"] = ctx.filed[2].message_id
    audit.record(
        conn,
        actor=record.delegate,
        action=AuditAction.ACTED_FOR,
        subject=record.lawyer,
        reason=record.text,
        detail=detail,
    )


class Delegations:
    """The delegations a gateway node consults, cached briefly, and the lawyers'
    own grants and revocations (the HTTPS API), through the writer."""

    TTL = Directory.TTL

    def __init__(self, reader: Engine, writer: CommitQueue) -> None:
        self._reader = reader
        self._writer = writer
        self._held: dict[str, tuple[float, tuple[Delegation, ...]]] = {}

    async def held_by(self, delegate: str) -> tuple[Delegation, ...]:
        """What ``delegate`` holds now (at most ``TTL`` seconds old)."""
        key = delegate.strip().lower()
        hit = self._held.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = await asyncio.to_thread(self._read, key)
        if len(self._held) > 10_000:
            self._held.clear()
        self._held[key] = (time.monotonic() + self.TTL, found)
        return found

    def _read(self, delegate: str) -> tuple[Delegation, ...]:
        with self._reader.connect() as conn:
            return tuple(in_force(conn, delegate=delegate))

    def forget(self, delegate: str) -> None:
        """Drop what this node remembers of ``delegate`` (after a change made here)."""
        self._held.pop(delegate.strip().lower(), None)

    async def granted_by(self, lawyer: Identity) -> list[Delegation]:
        """The delegations a lawyer has granted, read fresh."""

        def read() -> list[Delegation]:
            with self._reader.connect() as conn:
                return in_force(conn, lawyer=lawyer.address)

        return await asyncio.to_thread(read)

    async def grant(
        self, lawyer: Identity, delegate: str, right: Right, dossiers: Sequence[str]
    ) -> list[Delegation]:
        """A lawyer's own grant; what they have granted to ``delegate`` afterwards."""

        def work(conn: Connection, _ctx: WriteContext) -> list[Delegation]:
            plan = grant(conn, lawyer.address, delegate, right, dossiers, actor=lawyer.address)
            return in_force(conn, lawyer=lawyer.address, delegate=plan.delegate.address)

        done: list[Delegation] = await self._writer.submit(work)
        self.forget(delegate)
        return done

    async def revoke(self, lawyer: Identity, delegate: str, dossiers: Sequence[str]) -> Revocation:
        """A lawyer's own revocation."""

        def work(conn: Connection, _ctx: WriteContext) -> Revocation:
            return revoke(conn, lawyer.address, delegate, dossiers, actor=lawyer.address)

        done: Revocation = await self._writer.submit(work)
        self.forget(delegate)
        return done

    async def acted(self, act: ActedFor) -> None:
        """A delegate's act for a lawyer (over IMAP), in the audit log as "X for Y"."""
        await self._writer.submit(lambda conn, ctx: write_acted_for(conn, ctx, act))
