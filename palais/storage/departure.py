"""Departures kept and carried out: the store's side of ``palais.mailbox.departure``.

The rules are the domain's; here the facts are read, the plan carried out in
one transaction with its audit events, and nothing decided:

- ``declare`` / ``cancel``: an operator's change and its audit event, in the
  caller's transaction (``palais admin departure``);
- ``listing``: the departures, for ``palais admin departure list``;
- ``DepartureRunner``: in the gateway, looks for departures due at an
  interval (its clock injectable) and carries each out through the writer.
  The job first marks the departure done with ``UPDATE ... WHERE state =
  'pending'``: a second node or a restart finds nothing to do, and if the
  job fails the mark rolls back with everything else.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.orm import aliased

from palais.mailbox.audit import GATEWAY_ACTOR, AuditAction
from palais.mailbox.departure import (
    DepartureFacts,
    DeparturePlan,
    DepartureState,
    DossierFacts,
    plan_departure,
)
from palais.mailbox.enrolment import AccountFacts
from palais.mailbox.identity import Role
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind
from palais.periodic import Periodic
from palais.storage import audit, schema
from palais.storage.directory import Directory
from palais.storage.messages import insert_message
from palais.storage.placement import ensure_boxes, place_all
from palais.storage.sql import EN, PL, decode_flags, utc
from palais.storage.writer import CommitQueue, WriteContext

__all__ = [
    "DepartureRow",
    "DepartureRunner",
    "StalePlan",
    "cancel",
    "carry_out",
    "declare",
    "due",
    "listing",
    "pending_of",
    "read_facts",
]

DE = schema.table(schema.Departure)
AC = schema.table(schema.Account)
SV = schema.table(schema.Service)
DO = schema.table(schema.Dossier)
PA = schema.table(schema.Participation)
log = logging.getLogger("palais.departures")


@dataclass(frozen=True, slots=True)
class DepartureRow:
    id: int
    address: str
    role: str
    last_day: date
    effective_at: datetime
    successor: str | None
    state: DepartureState
    set_by: str
    set_at: datetime
    done_at: datetime | None
    outcome: dict[str, Any] | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "address": self.address,
            "role": self.role,
            "last_day": self.last_day.isoformat(),
            "effective_at": self.effective_at.isoformat(),
            "successor": self.successor,
            "state": self.state.value,
            "set_by": self.set_by,
            "set_at": self.set_at.isoformat(),
            "done_at": None if self.done_at is None else self.done_at.isoformat(),
            "outcome": self.outcome,
        }


def _rows_query() -> Any:
    departing = aliased(AC)
    successor = aliased(AC)
    return (
        select(
            DE,
            departing.c.address.label("address"),
            departing.c.role.label("role"),
            successor.c.address.label("successor"),
        )
        .join(departing, departing.c.id == DE.c.account_id)
        .outerjoin(successor, successor.c.id == DE.c.successor_id)
    )


def _row(r: Any) -> DepartureRow:
    last_day = r.last_day if isinstance(r.last_day, date) else date.fromisoformat(r.last_day)
    return DepartureRow(
        id=int(r.id),
        address=r.address,
        role=r.role,
        last_day=last_day,
        effective_at=utc(r.effective_at),
        successor=r.successor,
        state=DepartureState(r.state),
        set_by=r.set_by,
        set_at=utc(r.set_at),
        done_at=None if r.done_at is None else utc(r.done_at),
        outcome=json.loads(r.outcome) if r.outcome else None,
    )


def pending_of(conn: Connection, account_id: int) -> DepartureRow | None:
    """The account's pending departure (at most one: ``declare`` replaces it)."""
    r = conn.execute(
        _rows_query()
        .where(DE.c.account_id == account_id, DE.c.state == DepartureState.PENDING.value)
        .order_by(DE.c.id.desc())
        .limit(1)
    ).first()
    return None if r is None else _row(r)


def listing(engine: Engine, *, every: bool = False) -> list[DepartureRow]:
    """Pending departures by effective date; with ``every``, cancelled and done ones too."""
    stmt = _rows_query().order_by(DE.c.effective_at, DE.c.id)
    if not every:
        stmt = stmt.where(DE.c.state == DepartureState.PENDING.value)
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(stmt)]


def declare(
    conn: Connection,
    departing: AccountFacts,
    successor: AccountFacts | None,
    *,
    last_day: date,
    effective_at: datetime,
    actor: str,
    now: datetime,
) -> tuple[int, DepartureRow | None]:
    """Record a departure checked by ``check_departure``, replacing the pending one.

    Returns (its id, the departure it replaced if any), with its audit event.
    """
    before = pending_of(conn, departing.account_id)
    values = {
        "last_day": last_day,
        "effective_at": effective_at.astimezone(UTC),
        "successor_id": None if successor is None else successor.account_id,
        "set_by": actor,
        "set_at": now.astimezone(UTC),
    }
    if before is None:
        res = conn.execute(
            insert(DE).values(
                account_id=departing.account_id, state=DepartureState.PENDING.value, **values
            )
        )
        assert res.inserted_primary_key is not None
        departure_id = int(res.inserted_primary_key[0])
    else:
        departure_id = before.id
        conn.execute(update(DE).where(DE.c.id == before.id).values(**values))
    detail: dict[str, object] = {
        "departure": departure_id,
        "last_day": last_day.isoformat(),
        "effective_at": effective_at.astimezone(UTC).isoformat(),
        "successor": None if successor is None else successor.address,
        "role": departing.role.value,
    }
    if before is not None:
        detail["replaces"] = {
            "last_day": before.last_day.isoformat(),
            "successor": before.successor,
        }
    audit.record(
        conn,
        actor=actor,
        action=AuditAction.DEPARTURE_SET,
        subject=departing.address,
        detail=detail,
    )
    return departure_id, before


def cancel(conn: Connection, row: DepartureRow, *, actor: str, reason: str | None) -> None:
    """Cancel a pending departure checked by ``check_cancel``, with its audit event."""
    done = conn.execute(
        update(DE)
        .where(DE.c.id == row.id, DE.c.state == DepartureState.PENDING.value)
        .values(state=DepartureState.CANCELLED.value)
    ).rowcount
    if done != 1:  # carried out or cancelled meanwhile: the caller's check was stale
        raise LookupError(f"departure {row.id} is no longer pending")
    audit.record(
        conn,
        actor=actor,
        action=AuditAction.DEPARTURE_CANCELLED,
        subject=row.address,
        reason=reason,
        detail={
            "departure": row.id,
            "last_day": row.last_day.isoformat(),
            "successor": row.successor,
        },
    )


# -- carrying a departure out ----------------------------------------------------------


def due(engine: Engine, now: datetime) -> list[int]:
    """Pending departures whose time has come, oldest first."""
    with engine.connect() as conn:
        return [
            int(i)
            for i in conn.execute(
                select(DE.c.id)
                .where(
                    DE.c.state == DepartureState.PENDING.value,
                    DE.c.effective_at <= now.astimezone(UTC),
                )
                .order_by(DE.c.effective_at, DE.c.id)
            ).scalars()
        ]


def _account(conn: Connection, account_id: int) -> AccountFacts:
    address = conn.execute(select(AC.c.address).where(AC.c.id == account_id)).scalar_one()
    found = Directory.account_by_address(conn, address)
    assert found is not None
    return found


def read_facts(
    conn: Connection, departure_id: int, *, state: DepartureState = DepartureState.PENDING
) -> DepartureFacts | None:
    """What ``plan_departure`` needs, or None if the departure is not in ``state``."""
    d = conn.execute(select(DE).where(DE.c.id == departure_id, DE.c.state == state.value)).first()
    if d is None:
        return None
    departing = _account(conn, int(d.account_id))
    successor = None if d.successor_id is None else _account(conn, int(d.successor_id))
    successor_leaves = None
    if successor is not None:
        leaving = pending_of(conn, successor.account_id)
        successor_leaves = None if leaving is None else leaving.last_day
    # The dossiers they followed: those they take part in, and a clerk's service's.
    capacity: dict[int, str | None] = {
        int(r.dossier_id): str(r.capacity)
        for r in conn.execute(
            select(PA.c.dossier_id, PA.c.capacity).where(PA.c.account_id == departing.account_id)
        )
    }
    if departing.service is not None:
        service_id = conn.execute(
            select(AC.c.service_id).where(AC.c.id == departing.account_id)
        ).scalar_one()
        for dossier_id in conn.execute(
            select(DO.c.id).where(DO.c.service_id == service_id)
        ).scalars():
            capacity.setdefault(int(dossier_id), None)
    dossiers: list[DossierFacts] = []
    if capacity:
        rows = conn.execute(
            select(
                DO.c.id,
                DO.c.number,
                DO.c.address,
                SV.c.address.label("service"),
                SV.c.name.label("service_name"),
            )
            .join(SV, SV.c.id == DO.c.service_id)
            .where(DO.c.id.in_(sorted(capacity)))
            .order_by(DO.c.number)
        ).all()
        for r in rows:
            lawyers = tuple(
                _account(conn, int(a))
                for a in conn.execute(
                    select(AC.c.id)
                    .join(PA, PA.c.account_id == AC.c.id)
                    .where(
                        PA.c.dossier_id == r.id,
                        AC.c.role == Role.AVOCAT.value,
                        AC.c.active.is_(True),
                    )
                    .order_by(AC.c.address)
                ).scalars()
            )
            dossiers.append(
                DossierFacts(
                    number=r.number,
                    address=r.address,
                    service=r.service,
                    service_name=r.service_name,
                    capacity=capacity[int(r.id)],
                    lawyers=lawyers,
                )
            )
    last_day = d.last_day if isinstance(d.last_day, date) else date.fromisoformat(d.last_day)
    return DepartureFacts(
        departure_id=departure_id,
        departing=departing,
        successor=successor,
        last_day=last_day,
        dossiers=tuple(dossiers),
        successor_leaves=successor_leaves,
        effective_at=utc(d.effective_at),
    )


class StalePlan(Exception):
    """The facts changed between the plan made outside and the one in the transaction:
    a notice's bytes were not handed with the job. Tried again at the next look."""


def carry_out(
    conn: Connection, ctx: WriteContext, departure_id: int, now: datetime, zone: tzinfo
) -> dict[str, object] | None:
    """Carry a due departure out in the writer's transaction; what was done, or None
    if it is not pending or not due any more (done by another node, cancelled)."""
    marked = conn.execute(
        update(DE)
        .where(
            DE.c.id == departure_id,
            DE.c.state == DepartureState.PENDING.value,
            DE.c.effective_at <= now.astimezone(UTC),
        )
        .values(state=DepartureState.DONE.value, done_at=now.astimezone(UTC))
    ).rowcount
    if marked != 1:
        return None
    # Read after the mark: on PostgreSQL the row lock orders us after any
    # other node's change to it, so the facts are those in force now.
    facts = read_facts(conn, departure_id, state=DepartureState.DONE)
    assert facts is not None
    plan = plan_departure(facts, zone=zone)
    for notice in plan.notices:
        if ctx.sha256(notice.data) not in ctx.locations:
            raise StalePlan(f"departure {departure_id}: notice to {notice.lawyer} not prepared")
    outcome = _apply(conn, ctx, plan, now)
    conn.execute(update(DE).where(DE.c.id == departure_id).values(outcome=json.dumps(outcome)))
    return outcome


def _apply(
    conn: Connection, ctx: WriteContext, plan: DeparturePlan, now: datetime
) -> dict[str, object]:
    departing = plan.departing
    outcome: dict[str, object] = {"dossiers": list(plan.dossiers)}
    handover = plan.handover
    if handover is not None:
        successor = handover.successor
        outcome["successor"] = successor.address
        if handover.join_service is not None:
            service_id = conn.execute(
                select(SV.c.id).where(SV.c.address == handover.join_service)
            ).scalar_one()
            conn.execute(
                update(AC).where(AC.c.id == successor.account_id).values(service_id=service_id)
            )
            outcome["joined_service"] = handover.join_service
        owner = handover.join_service or successor.mailbox_owner
        joined: list[str] = []
        for number, capacity in handover.participations:
            dossier_id = conn.execute(select(DO.c.id).where(DO.c.number == number)).scalar_one()
            already = conn.execute(
                select(PA.c.account_id).where(
                    PA.c.dossier_id == dossier_id, PA.c.account_id == successor.account_id
                )
            ).first()
            if already is None:
                conn.execute(
                    insert(PA).values(
                        dossier_id=dossier_id, account_id=successor.account_id, capacity=capacity
                    )
                )
                joined.append(number)
            ensure_boxes(conn, owner, number)
        outcome["dossiers_joined"] = joined
        if handover.copy_mail_from and handover.copy_mail_to:
            outcome["messages_copied"] = _copy_mail(
                conn, ctx, handover.copy_mail_from, handover.copy_mail_to, handover.mail_dossiers
            )
    else:
        if plan.successor_set_aside:
            outcome["successor_set_aside"] = plan.successor_set_aside
        notified: list[str] = []
        for notice in plan.notices:
            dossier_id = conn.execute(
                select(DO.c.id).where(DO.c.number == notice.dossier)
            ).scalar_one()
            mid, _ = insert_message(
                conn,
                ctx,
                notice.data,
                summarize(notice.data),
                internaldate=now,
                sender=notice.sender,
                fingerprint="",  # the gateway wrote it: no client certificate
                dossier_id=dossier_id,
            )
            ensure_boxes(conn, notice.mailbox_owner, notice.dossier)
            place_all(
                conn, ctx, mid, notice.dossier, [(notice.mailbox_owner, BoxKind.RECUS, frozenset())]
            )
            notified.append(f"{notice.lawyer} {notice.dossier}")
        outcome["lawyers_notified"] = notified
    conn.execute(update(AC).where(AC.c.id == departing.account_id).values(active=False))
    outcome["deactivated"] = departing.address
    audit.record(
        conn,
        actor=GATEWAY_ACTOR,
        action=AuditAction.DEPARTURE_CARRIED_OUT,
        subject=departing.address,
        reason=plan.successor_set_aside,
        detail={"departure": plan.departure_id, **outcome},
    )
    audit.record(
        conn,
        actor=GATEWAY_ACTOR,
        action=AuditAction.ACCOUNT_DEACTIVATED,
        subject=departing.address,
        reason="departure",
        detail={"role": departing.role.value, "departure": plan.departure_id},
    )
    return outcome


def _copy_mail(
    conn: Connection, ctx: WriteContext, source: str, target: str, dossiers: tuple[str, ...]
) -> int:
    """The departing person's mail of these dossiers, shown in the successor's boxes too.

    Copies, not moves: the departed account keeps its history (it may be
    reactivated by an operator). Drafts stay theirs; a message the successor
    already holds in the same kind of box is not shown twice.
    """
    if not dossiers:
        return 0
    copied = 0
    placements = conn.execute(
        select(PL.c.id, PL.c.message_id, PL.c.kind, PL.c.dossier, PL.c.origin)
        .where(
            PL.c.owner == source,
            PL.c.dossier.in_(dossiers),
            PL.c.kind != BoxKind.BROUILLONS.value,
        )
        .order_by(PL.c.id)  # the order they arrived in: UIDs keep it
    ).all()
    for p in placements:
        twin = conn.execute(
            select(PL.c.id).where(
                PL.c.owner == target, PL.c.message_id == p.message_id, PL.c.kind == p.kind
            )
        ).first()
        if twin is not None:
            continue
        flags = conn.execute(select(EN.c.flags).where(EN.c.placement_id == p.id).limit(1)).scalar()
        place_all(
            conn,
            ctx,
            int(p.message_id),
            p.dossier,
            [(target, BoxKind(p.kind), decode_flags(flags or ""))],
            BoxKind(p.origin) if p.origin else None,
        )
        copied += 1
    return copied


class DepartureRunner(Periodic):
    """Carries out due departures in the gateway: at start, then every ``interval`` seconds.

    ``clock`` is injectable so that tests move time. Each departure is one
    writer job; one that fails is logged and tried again at the next look.
    """

    def __init__(
        self,
        reader: Engine,
        commits: CommitQueue,
        *,
        zone: tzinfo,
        interval: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__("palais-departures", interval)
        self._reader = reader
        self._commits = commits
        self._zone = zone
        self._clock = clock
        self.executed = 0  # carried out by this process
        self.failed = 0

    async def look(self) -> bool:
        await self.run_due()
        return False

    async def run_due(self) -> list[dict[str, object]]:
        """Carry out every departure due now; what each did (those carried out here)."""
        now = self._clock()
        done: list[dict[str, object]] = []
        for departure_id in await asyncio.to_thread(due, self._reader, now):
            try:
                outcome = await self._carry_out(departure_id, now)
            except Exception:
                self.failed += 1
                log.exception("departure %d could not be carried out", departure_id)
                continue
            if outcome is not None:
                self.executed += 1
                log.info(
                    "departure carried out id=%d account=%s successor=%s",
                    departure_id,
                    outcome.get("deactivated"),
                    outcome.get("successor"),
                )
                done.append(outcome)
        return done

    async def _carry_out(self, departure_id: int, now: datetime) -> dict[str, object] | None:
        # The notices' bytes go to the pack before the job runs: plan once
        # outside to write them, and again inside on the facts then in force.
        facts = await asyncio.to_thread(self._facts, departure_id)
        if facts is None:
            return None
        plan = plan_departure(facts, zone=self._zone)
        blobs = [n.data for n in plan.notices]
        return await self._commits.submit(
            functools.partial(_job, departure_id, now, self._zone), blobs
        )

    def _facts(self, departure_id: int) -> DepartureFacts | None:
        with self._reader.connect() as conn:
            return read_facts(conn, departure_id)


def _job(
    departure_id: int, now: datetime, zone: tzinfo, conn: Connection, ctx: WriteContext
) -> dict[str, object] | None:
    return carry_out(conn, ctx, departure_id, now, zone)
