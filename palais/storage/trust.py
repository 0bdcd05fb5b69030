"""What the gateway trusts, in the database: CA certificates per community,
the CRL in force per CA, and the generation every node watches.

Every change runs in one transaction that first locks ``trust_state`` (a
row lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite with a writer
engine), bumps the generation and writes its audit event, so that two
operators (or two nodes fetching the same CRL) are serialised and a node
that sees generation N sees every change up to N. The rules (is this a CA,
is this CRL newer) are ``palais.pki.trust_update``'s; the store applies
what it is handed. Values returned are plain data, never ORM rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from palais.mailbox.audit import AuditAction
from palais.storage import schema
from palais.storage.audit import record
from palais.storage.sql import utc

__all__ = [
    "ANCHOR",
    "INTERMEDIATE",
    "AlreadyTrusted",
    "NewAnchor",
    "NewCrl",
    "NotTrusted",
    "StoredAnchor",
    "StoredCrl",
    "TrustSet",
    "add_anchor",
    "anchors",
    "current",
    "generation",
    "put_crl",
    "remove_anchor",
    "seed",
]

TA = schema.table(schema.TrustAnchor)
TC = schema.table(schema.TrustCrl)
TS = schema.table(schema.TrustState)

ANCHOR: Final = "anchor"
INTERMEDIATE: Final = "intermediate"
_STATE_ID: Final = 1


class AlreadyTrusted(Exception):
    """The CA is trusted already (as the stored row says)."""


class NotTrusted(Exception):
    """No CA in force has that fingerprint."""


@dataclass(frozen=True, slots=True)
class NewAnchor:
    community: str
    kind: str  # ANCHOR or INTERMEDIATE
    fingerprint: str
    subject: str
    pem: str


@dataclass(frozen=True, slots=True)
class StoredAnchor:
    community: str
    kind: str
    fingerprint: str
    subject: str
    pem: str
    added: datetime
    removed: datetime | None


@dataclass(frozen=True, slots=True)
class NewCrl:
    issuer: str  # the CA certificate's fingerprint
    pem: str
    number: int | None
    this_update: datetime
    next_update: datetime
    source: str  # "import:<file name>", "seed:<file name>" or the URL fetched


@dataclass(frozen=True, slots=True)
class StoredCrl:
    issuer: str
    pem: str
    number: int | None
    this_update: datetime
    next_update: datetime | None
    fetched: datetime
    source: str


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The anchors in force and their CRLs, as of ``generation`` (read together)."""

    generation: int
    anchors: tuple[StoredAnchor, ...]
    crls: tuple[StoredCrl, ...]


def generation(engine: Engine) -> int:
    """The trust generation (0 before anything was stored): what nodes poll."""
    with engine.connect() as conn:
        value = conn.execute(select(TS.c.generation).where(TS.c.id == _STATE_ID)).scalar()
    return int(value) if value is not None else 0


def current(engine: Engine) -> TrustSet:
    """The anchors in force and the CRLs, in one read transaction."""
    with engine.begin() as conn:
        value = conn.execute(select(TS.c.generation).where(TS.c.id == _STATE_ID)).scalar()
        rows = conn.execute(select(TA).where(TA.c.removed.is_(None)).order_by(TA.c.id)).all()
        crls = conn.execute(select(TC).order_by(TC.c.issuer)).all()
    return TrustSet(
        generation=int(value) if value is not None else 0,
        anchors=tuple(_anchor(row) for row in rows),
        crls=tuple(_crl(row) for row in crls),
    )


def anchors(engine: Engine, *, removed: bool = False) -> list[StoredAnchor]:
    """The anchors in force, or with ``removed`` every anchor ever stored."""
    stmt = select(TA).order_by(TA.c.community, TA.c.id)
    if not removed:
        stmt = stmt.where(TA.c.removed.is_(None))
    with engine.connect() as conn:
        return [_anchor(row) for row in conn.execute(stmt)]


def seed(
    engine: Engine,
    new_anchors: Sequence[NewAnchor],
    new_crls: Sequence[NewCrl],
    *,
    actor: str,
    reason: str | None,
) -> bool:
    """Store the [trust] files' content if no anchor was ever stored.

    False when the tables were not empty (another node or an earlier start
    seeded them): the database, not the files, is then what is trusted.
    """
    with engine.begin() as conn:
        _lock(conn)
        if conn.execute(select(func.count()).select_from(TA)).scalar():
            return False
        now = datetime.now(UTC)
        for anchor in new_anchors:
            _insert_anchor(conn, anchor, now)
            _record_added(conn, anchor, actor=actor, reason=reason)
        for crl in new_crls:
            conn.execute(insert(TC).values(**_crl_values(crl, now)))
            record(
                conn,
                actor=actor,
                action=AuditAction.CRL_IMPORTED,
                subject=crl.issuer,
                reason=reason,
                detail=_crl_detail(crl),
            )
        _bump(conn)
    return True


def add_anchor(engine: Engine, anchor: NewAnchor, *, actor: str, reason: str | None) -> None:
    """Trust a CA (again, if it was removed); AlreadyTrusted if it is in force."""
    with engine.begin() as conn:
        _lock(conn)
        row = conn.execute(select(TA).where(TA.c.fingerprint == anchor.fingerprint)).first()
        now = datetime.now(UTC)
        if row is None:
            _insert_anchor(conn, anchor, now)
        elif row.removed is None:
            raise AlreadyTrusted(f"{anchor.subject} is trusted already for {row.community}")
        else:
            # The fingerprint is unique: a CA added back reuses its row,
            # whose removal stays in the audit log.
            conn.execute(
                update(TA)
                .where(TA.c.id == row.id)
                .values(community=anchor.community, kind=anchor.kind, added=now, removed=None)
            )
        _record_added(conn, anchor, actor=actor, reason=reason)
        _bump(conn)


def remove_anchor(
    engine: Engine, fingerprint: str, *, actor: str, reason: str | None
) -> StoredAnchor:
    """Stop trusting a CA (its row stays, dated); NotTrusted if none in force."""
    with engine.begin() as conn:
        _lock(conn)
        row = conn.execute(
            select(TA).where(TA.c.fingerprint == fingerprint, TA.c.removed.is_(None))
        ).first()
        if row is None:
            raise NotTrusted(f"no CA in force with fingerprint {fingerprint}")
        now = datetime.now(UTC)
        conn.execute(update(TA).where(TA.c.id == row.id).values(removed=now))
        gone = _anchor(row)
        record(
            conn,
            actor=actor,
            action=AuditAction.TRUST_REMOVED,
            subject=fingerprint,
            reason=reason,
            detail={"community": gone.community, "kind": gone.kind, "subject": gone.subject},
        )
        _bump(conn)
    return dataclasses.replace(gone, removed=now)


def put_crl(
    engine: Engine,
    issuer: str,
    decide: Callable[[StoredCrl | None], NewCrl],
    *,
    actor: str,
    action: AuditAction,
    reason: str | None,
) -> NewCrl:
    """Replace the CRL in force for ``issuer`` with what ``decide`` returns.

    ``decide`` gets the CRL in force (or None) *under the lock*, so the
    "never older" check and the write cannot be interleaved with another
    node's; it raises to change nothing.
    """
    with engine.begin() as conn:
        _lock(conn)
        row = conn.execute(select(TC).where(TC.c.issuer == issuer)).first()
        new = decide(_crl(row) if row is not None else None)
        if new.issuer != issuer:
            raise ValueError("decide() returned another CA's CRL")
        values = _crl_values(new, datetime.now(UTC))
        if row is None:
            conn.execute(insert(TC).values(**values))
        else:
            conn.execute(update(TC).where(TC.c.issuer == issuer).values(**values))
        record(
            conn,
            actor=actor,
            action=action,
            subject=issuer,
            reason=reason,
            detail=_crl_detail(new),
        )
        _bump(conn)
    return new


# --- internals ------------------------------------------------------------------


def _lock(conn: Connection) -> None:
    """Serialise trust changes: the state row, created if need be, then locked."""
    values = {"id": _STATE_ID, "generation": 0}
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(TS).values(**values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite.insert(TS).values(**values).on_conflict_do_nothing())
    # FOR UPDATE on PostgreSQL; SQLite has none and needs none (the writer
    # engine's BEGIN IMMEDIATE already holds the database's write lock).
    conn.execute(select(TS.c.generation).where(TS.c.id == _STATE_ID).with_for_update())


def _bump(conn: Connection) -> None:
    conn.execute(update(TS).where(TS.c.id == _STATE_ID).values(generation=TS.c.generation + 1))


def _insert_anchor(conn: Connection, anchor: NewAnchor, now: datetime) -> None:
    if anchor.kind not in (ANCHOR, INTERMEDIATE):
        raise ValueError(f"unknown kind {anchor.kind!r}")
    conn.execute(
        insert(TA).values(
            community=anchor.community,
            kind=anchor.kind,
            fingerprint=anchor.fingerprint,
            subject=anchor.subject,
            pem=anchor.pem,
            added=now,
            removed=None,
        )
    )


def _crl_values(crl: NewCrl, now: datetime) -> dict[str, Any]:
    return {
        "issuer": crl.issuer,
        "pem": crl.pem,
        "number": crl.number,
        "this_update": crl.this_update.astimezone(UTC),
        "next_update": crl.next_update.astimezone(UTC),
        "fetched": now,
        "source": crl.source,
    }


def _record_added(conn: Connection, anchor: NewAnchor, *, actor: str, reason: str | None) -> None:
    record(
        conn,
        actor=actor,
        action=AuditAction.TRUST_ADDED,
        subject=anchor.fingerprint,
        reason=reason,
        detail={"community": anchor.community, "kind": anchor.kind, "subject": anchor.subject},
    )


def _crl_detail(crl: NewCrl) -> dict[str, object]:
    return {
        "number": crl.number,
        "this_update": crl.this_update.isoformat(),
        "next_update": crl.next_update.isoformat(),
        "source": crl.source,
    }


def _anchor(row: Any) -> StoredAnchor:
    return StoredAnchor(
        community=row.community,
        kind=row.kind,
        fingerprint=row.fingerprint,
        subject=row.subject,
        pem=row.pem,
        added=utc(row.added),
        removed=utc(row.removed) if row.removed is not None else None,
    )


def _crl(row: Any) -> StoredCrl:
    return StoredCrl(
        issuer=row.issuer,
        pem=row.pem,
        number=int(row.number) if row.number is not None else None,
        this_update=utc(row.this_update),
        next_update=utc(row.next_update) if row.next_update is not None else None,
        fetched=utc(row.fetched),
        source=row.source,
    )
