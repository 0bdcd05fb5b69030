"""Accounts, services and dossiers: who exists and where their mail goes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, insert, select, update

from palais.mailbox.errors import NotAllowed
from palais.mailbox.identity import CertificateIdentity, Identity, Role
from palais.mailbox.routing import Addressee, AddresseeKind
from palais.storage import schema
from palais.storage.mailstore import ensure_boxes
from palais.storage.writer import CommitQueue

AC = schema.table(schema.Account)
CE = schema.table(schema.Certificate)
SV = schema.table(schema.Service)
DO = schema.table(schema.Dossier)
PA = schema.table(schema.Participation)

log = logging.getLogger("palais.storage.directory")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DossierRecord:
    id: int
    number: str
    address: str
    juridiction: str
    service_address: str


class Directory:
    # Directory facts change rarely (a constitution, a departure); several
    # gateway nodes share the database, so cached answers expire quickly
    # rather than being invalidated.
    TTL = 5.0

    def __init__(self, reader: Engine, writer: CommitQueue) -> None:
        self._reader = reader
        self._writer = writer
        self._by_fingerprint: dict[str, Identity] = {}
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}

    def _cached(self, kind: str, key: str, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._cache.get((kind, key))
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        value = compute()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(kind, key)] = (now + self.TTL, value)
        return value

    # -- identities ------------------------------------------------------------

    def _identity_row(self, conn: Connection, account_id: int, fingerprint: str) -> Identity:
        row = conn.execute(
            select(
                AC.c.id,
                AC.c.address,
                AC.c.role,
                AC.c.display_name,
                AC.c.active,
                SV.c.address.label("service"),
            )
            .outerjoin(SV, SV.c.id == AC.c.service_id)
            .where(AC.c.id == account_id)
        ).one()
        if not row.active:
            raise NotAllowed(
                "This account is deactivated", reason=f"inactive account {row.address}"
            )
        return Identity(
            account_id=int(row.id),
            address=row.address,
            role=Role(row.role),
            display_name=row.display_name,
            fingerprint=fingerprint,
            mailbox_owner=row.service or row.address,
        )

    async def identity_for(self, cert: CertificateIdentity) -> Identity:
        """The account a verified certificate proves; registers it on first use.

        An unknown certificate from a trusted anchor is a first connection:
        the account is created (or, for a known address of the same role, the
        renewed card is linked to it) and the event is logged for operators.
        """
        cached = self._by_fingerprint.get(cert.fingerprint)
        if cached is not None:
            return cached
        with self._reader.connect() as conn:
            account_id = conn.execute(
                select(CE.c.account_id).where(CE.c.fingerprint == cert.fingerprint)
            ).scalar()
            if account_id is not None:
                ident = self._identity_row(conn, int(account_id), cert.fingerprint)
                if ident.address != cert.address or ident.role != cert.role:
                    raise NotAllowed(
                        reason=f"certificate {cert.fingerprint} bound to {ident.address}"
                    )
                self._by_fingerprint[cert.fingerprint] = ident
                return ident
        new_id: int = await self._writer.submit(lambda c, _ctx: self._register(c, cert))
        with self._reader.connect() as conn:
            ident = self._identity_row(conn, new_id, cert.fingerprint)
        self._by_fingerprint[cert.fingerprint] = ident
        return ident

    def _register(self, conn: Connection, cert: CertificateIdentity) -> int:
        row = conn.execute(select(AC.c.id, AC.c.role).where(AC.c.address == cert.address)).first()
        if row is None:
            account_id = self.add_account(
                conn,
                address=cert.address,
                role=cert.role,
                display_name=cert.display_name,
                fingerprint=cert.fingerprint,
                subject=cert.subject,
            )
            log.info(
                "account registered address=%s role=%s fingerprint=%s",
                cert.address,
                cert.role,
                cert.fingerprint,
            )
            return account_id
        if row.role != cert.role.value:
            raise NotAllowed(reason=f"{cert.address} is a {row.role}, certificate says {cert.role}")
        account_id = int(row.id)
        existing = conn.execute(
            select(CE.c.fingerprint).where(CE.c.fingerprint == cert.fingerprint)
        ).first()
        if existing is None:
            conn.execute(
                insert(CE).values(
                    fingerprint=cert.fingerprint,
                    account_id=account_id,
                    subject=cert.subject,
                    first_seen=datetime.now(UTC),
                )
            )
        log.info("certificate linked address=%s fingerprint=%s", cert.address, cert.fingerprint)
        return account_id

    # -- addresses -----------------------------------------------------------

    def resolve(self, address: str) -> Addressee | None:
        addr = address.strip().lower()
        return self._cached("resolve", addr, lambda: self._resolve(addr))

    def _resolve(self, addr: str) -> Addressee | None:
        with self._reader.connect() as conn:
            d = conn.execute(
                select(DO.c.number, SV.c.address.label("service"))
                .join(SV, SV.c.id == DO.c.service_id)
                .where(DO.c.address == addr)
            ).first()
            if d is not None:
                return Addressee(addr, AddresseeKind.DOSSIER, d.service, dossier=d.number)
            if conn.execute(select(SV.c.id).where(SV.c.address == addr)).first() is not None:
                return Addressee(addr, AddresseeKind.SERVICE, addr)
            a = conn.execute(
                select(AC.c.address, AC.c.active, SV.c.address.label("service"))
                .outerjoin(SV, SV.c.id == AC.c.service_id)
                .where(AC.c.address == addr)
            ).first()
            if a is not None and a.active:
                return Addressee(addr, AddresseeKind.PERSON, a.service or a.address)
        return None

    def dossier(self, number: str) -> DossierRecord | None:
        with self._reader.connect() as conn:
            r = conn.execute(
                select(
                    DO.c.id,
                    DO.c.number,
                    DO.c.address,
                    DO.c.juridiction,
                    SV.c.address.label("service"),
                )
                .join(SV, SV.c.id == DO.c.service_id)
                .where(DO.c.number == number)
            ).first()
        if r is None:
            return None
        return DossierRecord(int(r.id), r.number, r.address, r.juridiction, r.service)

    def participants(self, number: str) -> frozenset[str]:
        """Addresses that take part in a dossier: its service and the service's
        clerks, its constituted lawyers, its magistrates and its court system."""
        return self._cached("participants", number, lambda: self._participants(number))

    def _participants(self, number: str) -> frozenset[str]:
        with self._reader.connect() as conn:
            d = conn.execute(
                select(DO.c.id, DO.c.service_id, SV.c.address)
                .join(SV, SV.c.id == DO.c.service_id)
                .where(DO.c.number == number)
            ).first()
            if d is None:
                return frozenset()
            people = (
                conn.execute(
                    select(AC.c.address)
                    .join(PA, PA.c.account_id == AC.c.id)
                    .where(PA.c.dossier_id == d.id, AC.c.active.is_(True))
                )
                .scalars()
                .all()
            )
            clerks = (
                conn.execute(
                    select(AC.c.address).where(
                        AC.c.service_id == d.service_id, AC.c.active.is_(True)
                    )
                )
                .scalars()
                .all()
            )
        return frozenset([d.address, *people, *clerks])

    # -- operator set-up (used by `palais init` and the operator's tools) ---------

    @staticmethod
    def add_service(conn: Connection, *, address: str, name: str, juridiction: str) -> int:
        res = conn.execute(
            insert(SV).values(address=address.lower(), name=name, juridiction=juridiction)
        )
        assert res.inserted_primary_key is not None
        ensure_boxes(conn, address.lower())
        return int(res.inserted_primary_key[0])

    @staticmethod
    def add_account(
        conn: Connection,
        *,
        address: str,
        role: Role,
        display_name: str,
        fingerprint: str | None = None,
        subject: str = "",
        service_id: int | None = None,
    ) -> int:
        now = datetime.now(UTC)
        res = conn.execute(
            insert(AC).values(
                address=address.lower(),
                role=role.value,
                display_name=display_name,
                service_id=service_id,
                active=True,
                created_at=now,
            )
        )
        assert res.inserted_primary_key is not None
        account_id = int(res.inserted_primary_key[0])
        if service_id is None:
            ensure_boxes(conn, address.lower())
        if fingerprint:
            conn.execute(
                insert(CE).values(
                    fingerprint=fingerprint, account_id=account_id, subject=subject, first_seen=now
                )
            )
        return account_id

    @staticmethod
    def add_dossier(
        conn: Connection, *, number: str, address: str, juridiction: str, service_id: int
    ) -> int:
        res = conn.execute(
            insert(DO).values(
                number=number,
                address=address.lower(),
                juridiction=juridiction,
                service_id=service_id,
            )
        )
        assert res.inserted_primary_key is not None
        service = conn.execute(select(SV.c.address).where(SV.c.id == service_id)).scalar_one()
        ensure_boxes(conn, service, number)
        return int(res.inserted_primary_key[0])

    @staticmethod
    def add_participant(
        conn: Connection, *, dossier_id: int, account_id: int, capacity: str
    ) -> None:
        conn.execute(
            insert(PA).values(dossier_id=dossier_id, account_id=account_id, capacity=capacity)
        )
        # Gaining access to a dossier brings its five boxes.
        number = conn.execute(select(DO.c.number).where(DO.c.id == dossier_id)).scalar_one()
        owner = conn.execute(
            select(func.coalesce(SV.c.address, AC.c.address))
            .select_from(AC)
            .outerjoin(SV, SV.c.id == AC.c.service_id)
            .where(AC.c.id == account_id)
        ).scalar_one()
        ensure_boxes(conn, owner, number)

    @staticmethod
    def deactivate(conn: Connection, address: str) -> None:
        conn.execute(update(AC).where(AC.c.address == address.lower()).values(active=False))
