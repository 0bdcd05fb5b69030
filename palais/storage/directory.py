"""Accounts, services and dossiers: who exists and where their mail goes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from palais.mailbox.audit import AuditAction
from palais.mailbox.boxes import SAISINE_KINDS
from palais.mailbox.dossiers import (
    DossierOpening,
    Participation,
    plan_dossier_opening,
    plan_participation,
)
from palais.mailbox.enrolment import (
    AccountFacts,
    Enrolment,
    EnrolmentAction,
    EnrolmentFacts,
    EnrolmentPolicy,
    LinkPlan,
    MergePlan,
    ReferredToOperator,
    community_of,
    decide_enrolment,
)
from palais.mailbox.identity import CertificateIdentity, Identity, Role
from palais.mailbox.model import BoxKind, Placement
from palais.mailbox.routing import Addressee, AddresseeKind
from palais.storage import audit, schema
from palais.storage.placement import drop_placement, ensure_boxes, place_all
from palais.storage.sql import EN, PL, decode_flags
from palais.storage.writer import CommitQueue, WriteContext

AC = schema.table(schema.Account)
CE = schema.table(schema.Certificate)
SV = schema.table(schema.Service)
DO = schema.table(schema.Dossier)
PA = schema.table(schema.Participation)
FR = schema.table(schema.FirstRead)

log = logging.getLogger("palais.storage.directory")
_STANDING_CHUNK = 900  # certificates per statement in standing()
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
    # rather than being invalidated. A deactivated account stops working
    # within this many seconds.
    TTL = 5.0

    def __init__(
        self,
        reader: Engine,
        writer: CommitQueue,
        *,
        enrolment: EnrolmentPolicy = EnrolmentPolicy.REGISTER,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._policy = enrolment  # [accounts] enrolment
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}

    # A cache hit answers at once, on the event loop; a miss runs its SQL in
    # a worker thread, so that a slow database never stalls other sessions.

    def _fresh(self, kind: str, key: str) -> tuple[bool, Any]:
        hit = self._cache.get((kind, key))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def _keep(self, kind: str, key: str, value: Any) -> None:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(kind, key)] = (time.monotonic() + self.TTL, value)

    async def _cached(self, kind: str, key: str, compute: Callable[[], T]) -> T:
        found, value = self._fresh(kind, key)
        if found:
            hit: T = value
            return hit
        computed = await asyncio.to_thread(compute)
        self._keep(kind, key, computed)
        return computed

    # -- identities ------------------------------------------------------------

    async def identity_for(self, cert: CertificateIdentity) -> Identity:
        """The account a verified certificate proves, enrolling it if need be.

        The domain decides (``decide_enrolment``): the certificate's own
        account, a registration, a renewed card linked to its account, or a
        refusal. A registration or a link is decided again and carried out in
        one writer transaction, on the facts as they are then.
        """
        found, cached = self._fresh("identity", cert.fingerprint)
        if found:
            known: Identity = cached
            return known
        facts = await asyncio.to_thread(self._read_facts, cert)
        try:
            enrolment = decide_enrolment(cert, facts, self._policy)
            if enrolment.action is EnrolmentAction.KNOWN:
                ident = enrolment.identity(cert)
            else:
                enrolment, ident = await self._writer.submit(
                    lambda conn, _ctx: self._enrol(conn, cert)
                )
        except ReferredToOperator as referred:
            log.warning(
                "enrolment referred to an operator address=%s role=%s fingerprint=%s reason=%s",
                cert.address,
                cert.role,
                cert.fingerprint,
                referred.reason,
            )
            raise
        if enrolment.action is EnrolmentAction.REGISTER:
            log.info(
                "account registered address=%s role=%s fingerprint=%s",
                cert.address,
                cert.role,
                cert.fingerprint,
            )
        elif enrolment.action is EnrolmentAction.LINK_RENEWED_CARD:
            log.info("certificate linked address=%s fingerprint=%s", cert.address, cert.fingerprint)
        self._keep("identity", cert.fingerprint, ident)
        return ident

    def _read_facts(self, cert: CertificateIdentity) -> EnrolmentFacts:
        with self._reader.connect() as conn:
            return self._facts(conn, cert)

    @staticmethod
    def _facts(conn: Connection, cert: CertificateIdentity) -> EnrolmentFacts:
        holder = Directory.certificate_holder(conn, cert.fingerprint)
        if holder is not None:
            return EnrolmentFacts(holder=holder, same_address=None)
        same = Directory.account_by_address(conn, cert.address)
        reserved = False
        if same is None:
            reserved = (
                conn.execute(select(SV.c.id).where(SV.c.address == cert.address)).first()
                is not None
                or conn.execute(select(DO.c.id).where(DO.c.address == cert.address)).first()
                is not None
            )
        keyed = None
        if cert.serial_number is not None:
            keyed = Directory.identifier_holder(conn, cert.role, cert.serial_number)
        return EnrolmentFacts(
            holder=None, same_address=same, address_reserved=reserved, same_identifier=keyed
        )

    @staticmethod
    def certificate_holder(conn: Connection, fingerprint: str) -> AccountFacts | None:
        """The account a certificate is linked to."""
        row = conn.execute(
            _facts_query()
            .join(CE, CE.c.account_id == AC.c.id)
            .where(CE.c.fingerprint == fingerprint)
        ).first()
        return None if row is None else _account_facts(row)

    @staticmethod
    def account_by_address(conn: Connection, address: str) -> AccountFacts | None:
        row = conn.execute(_facts_query().where(AC.c.address == address.strip().lower())).first()
        return None if row is None else _account_facts(row)

    @staticmethod
    def identifier_holder(conn: Connection, role: Role, identifier: str) -> AccountFacts | None:
        """The account keyed by ``identifier`` in the community that issues ``role``'s cards."""
        row = conn.execute(
            _facts_query().where(
                AC.c.community == community_of(role).value, AC.c.identifier == identifier
            )
        ).first()
        return None if row is None else _account_facts(row)

    def _enrol(self, conn: Connection, cert: CertificateIdentity) -> tuple[Enrolment, Identity]:
        """Decide on the facts in this transaction and carry the decision out."""
        enrolment = decide_enrolment(cert, self._facts(conn, cert), self._policy)
        if enrolment.action is EnrolmentAction.REGISTER:
            account_id = self.add_account(
                conn,
                address=cert.address,
                role=cert.role,
                display_name=cert.display_name,
                fingerprint=cert.fingerprint,
                subject=cert.subject,
                identifier=cert.serial_number,
            )
            return enrolment, enrolment.identity(cert, account_id)
        if enrolment.action is EnrolmentAction.LINK_RENEWED_CARD:
            account = enrolment.account
            assert account is not None
            self._link(conn, account.account_id, cert)
            if enrolment.adopt_identifier is not None:
                self._key(conn, account.account_id, account.role, enrolment.adopt_identifier)
            # A renewal changes who may act as the account: the audit log
            # keeps it as it keeps an operator's link (case B).
            audit.record(
                conn,
                actor=cert.address,
                action=AuditAction.CERTIFICATE_LINKED,
                subject=account.address,
                reason="renewed card",
                detail={
                    "fingerprint": cert.fingerprint,
                    "identifier": cert.serial_number,
                    "by": "holder",
                },
            )
        return enrolment, enrolment.identity(cert)

    @staticmethod
    def _link(conn: Connection, account_id: int, cert: CertificateIdentity) -> None:
        conn.execute(
            insert(CE).values(
                fingerprint=cert.fingerprint,
                account_id=account_id,
                subject=cert.subject,
                first_seen=datetime.now(UTC),
            )
        )

    @staticmethod
    def _key(conn: Connection, account_id: int, role: Role, identifier: str | None) -> None:
        conn.execute(
            update(AC)
            .where(AC.c.id == account_id)
            .values(
                identifier=identifier,
                community=None if identifier is None else community_of(role).value,
            )
        )

    # -- operators' changes: a card linked (case B), duplicates merged (case C) --

    @staticmethod
    def link_certificate(
        conn: Connection, plan: LinkPlan, cert: CertificateIdentity, *, actor: str, reason: str
    ) -> None:
        """Carry out ``decide_link`` in the caller's transaction, with its audit event.

        A running gateway sees it within ``Directory.TTL`` (its identity
        cache expires) and its session watcher at its next check.
        """
        account = plan.account
        Directory._link(conn, account.account_id, cert)
        if plan.identifier != account.identifier:
            Directory._key(conn, account.account_id, account.role, plan.identifier)
        audit.record(
            conn,
            actor=actor,
            action=AuditAction.CERTIFICATE_LINKED,
            subject=account.address,
            reason=reason,
            detail={
                "fingerprint": cert.fingerprint,
                "certificate_address": cert.address,
                "identifier": plan.identifier,
                "previous_identifier": account.identifier,
                "by": "operator",
            },
        )

    @staticmethod
    def merge_accounts(
        conn: Connection, plan: MergePlan, *, actor: str, reason: str
    ) -> dict[str, object]:
        """Carry out ``decide_merge`` in the caller's transaction; what moved.

        The source's certificates, dossier participations and mail go to the
        target; the source is deactivated (its address stays taken, so that
        nobody registers it anew). Each moved placement gets new entries,
        new UIDs at the end of the target's boxes with its flags kept; a
        message the target already holds in the same kind of box is not
        shown twice. Read receipts already sent stay sent.
        """
        source, target = plan.source, plan.target
        ctx = WriteContext()
        owner = plan.mailbox_owner
        # Service membership first: the target's boxes are its service's afterwards.
        if plan.service != target.service:
            service_id = conn.execute(
                select(SV.c.id).where(SV.c.address == plan.service)
            ).scalar_one()
            conn.execute(
                update(AC).where(AC.c.id == target.account_id).values(service_id=service_id)
            )
        certificates = conn.execute(
            update(CE)
            .where(CE.c.account_id == source.account_id)
            .values(account_id=target.account_id)
        ).rowcount
        # Participations: the target takes the source's place in each dossier.
        joined: list[str] = []
        rows = conn.execute(
            select(PA.c.dossier_id, PA.c.capacity, DO.c.number)
            .join(DO, DO.c.id == PA.c.dossier_id)
            .where(PA.c.account_id == source.account_id)
        ).all()
        already = set(
            conn.execute(
                select(PA.c.dossier_id).where(PA.c.account_id == target.account_id)
            ).scalars()
        )
        for row in rows:
            conn.execute(
                delete(PA).where(
                    PA.c.dossier_id == row.dossier_id, PA.c.account_id == source.account_id
                )
            )
            if row.dossier_id not in already:
                conn.execute(
                    insert(PA).values(
                        dossier_id=row.dossier_id,
                        account_id=target.account_id,
                        capacity=row.capacity,
                    )
                )
                joined.append(str(row.number))
            ensure_boxes(conn, owner, str(row.number))
        moved = dropped = 0
        ensure_boxes(conn, owner)
        for held_by in plan.move_from:
            placements = conn.execute(
                select(PL.c.id, PL.c.message_id, PL.c.kind, PL.c.dossier, PL.c.origin)
                .where(PL.c.owner == held_by)
                .order_by(PL.c.id)  # the order they arrived in: UIDs keep it
            ).all()
            for p in placements:
                kind = BoxKind(p.kind)
                twin = conn.execute(
                    select(PL.c.id).where(
                        PL.c.owner == owner, PL.c.message_id == p.message_id, PL.c.kind == p.kind
                    )
                ).first()
                if twin is None:
                    flags = conn.execute(
                        select(EN.c.flags).where(EN.c.placement_id == p.id).limit(1)
                    ).scalar()
                    if p.dossier is not None:
                        ensure_boxes(conn, owner, p.dossier)
                    elif kind in SAISINE_KINDS:  # a lawyer's saisines follow them
                        ensure_boxes(conn, owner, saisines=True)
                    origin = BoxKind(p.origin) if p.origin else None
                    # Placed before the old one goes: a message nobody else
                    # holds would otherwise be released with its bytes.
                    place_all(
                        conn,
                        ctx,
                        int(p.message_id),
                        p.dossier,
                        [(owner, kind, decode_flags(flags or ""))],
                        origin,
                    )
                    moved += 1
                else:
                    dropped += 1
                drop_placement(
                    conn,
                    ctx,
                    _placement(int(p.id), int(p.message_id), kind, p.dossier, p.origin),
                )
            # One read receipt per message and owner, ever: what the source
            # read stays read for the target.
            read = set(conn.execute(select(FR.c.message_id).where(FR.c.owner == owner)).scalars())
            for message_id in conn.execute(
                select(FR.c.message_id).where(FR.c.owner == held_by)
            ).scalars():
                if message_id not in read:
                    conn.execute(
                        update(FR)
                        .where(FR.c.owner == held_by, FR.c.message_id == message_id)
                        .values(owner=owner)
                    )
        # The source is kept, deactivated: its address stays taken and its
        # history (the audit log, evidence naming it) keeps its meaning.
        conn.execute(
            update(AC)
            .where(AC.c.id == source.account_id)
            .values(active=False, identifier=None, community=None)
        )
        if plan.identifier != target.identifier:
            Directory._key(conn, target.account_id, target.role, plan.identifier)
        done: dict[str, object] = {
            "from": source.address,
            "into": target.address,
            "mailbox_owner": owner,
            "certificates": int(certificates),
            "placements_moved": moved,
            "placements_already_held": dropped,
            "dossiers_joined": joined,
            "service": plan.service,
            "identifier": plan.identifier,
        }
        audit.record(
            conn,
            actor=actor,
            action=AuditAction.ACCOUNT_MERGED,
            subject=source.address,
            reason=reason,
            detail=done,
        )
        return done

    # -- open sessions ---------------------------------------------------------

    async def standing(self, fingerprints: Collection[str]) -> dict[str, tuple[int, bool]]:
        """For each certificate still linked to an account: (account id, active).

        A certificate linked to no account is absent. Read fresh, never from
        the identity cache: the session watcher asks this for all the open
        sessions together once per check, and must see a deactivation now.
        """
        wanted = sorted(set(fingerprints))
        if not wanted:
            return {}
        return await asyncio.to_thread(self._standing, wanted)

    def _standing(self, wanted: list[str]) -> dict[str, tuple[int, bool]]:
        found: dict[str, tuple[int, bool]] = {}
        with self._reader.connect() as conn:
            # One statement per chunk: SQLite builds before 3.32 cap a
            # statement's parameters at 999.
            for start in range(0, len(wanted), _STANDING_CHUNK):
                rows = conn.execute(
                    select(CE.c.fingerprint, AC.c.id, AC.c.active)
                    .join(AC, AC.c.id == CE.c.account_id)
                    .where(CE.c.fingerprint.in_(wanted[start : start + _STANDING_CHUNK]))
                )
                for row in rows:
                    found[row.fingerprint] = (int(row.id), bool(row.active))
        return found

    # -- addresses -----------------------------------------------------------

    async def address_domains(self) -> frozenset[str]:
        """The domains of the active people's addresses (court systems use no
        mail client): what the mail-client autoconfiguration announces."""
        return await self._cached("domains", "", self._address_domains)

    def _address_domains(self) -> frozenset[str]:
        with self._reader.connect() as conn:
            rows = conn.execute(
                select(AC.c.address).where(
                    AC.c.active.is_(True), AC.c.role != Role.COURT_SYSTEM.value
                )
            )
            return frozenset(
                address.rpartition("@")[2].lower() for (address,) in rows if "@" in address
            )

    async def resolve(self, address: str) -> Addressee | None:
        addr = address.strip().lower()
        return await self._cached("resolve", addr, lambda: self._resolve(addr))

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

    async def dossier(self, number: str) -> DossierRecord | None:
        return await self._cached("dossier", number, lambda: self._dossier(number))

    def _dossier(self, number: str) -> DossierRecord | None:
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

    def forget_dossier(self, number: str, address: str) -> None:
        """Forget what this node cached of a dossier someone just joined or
        that was just created (other nodes see it within ``TTL``)."""
        for key in (("participants", number), ("dossier", number), ("resolve", address)):
            self._cache.pop(key, None)

    async def participants(self, number: str) -> frozenset[str]:
        """Addresses that take part in a dossier: its service and the service's
        clerks, its constituted lawyers, its magistrates and its court system."""
        return await self._cached("participants", number, lambda: self._participants(number))

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
        identifier: str | None = None,
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
                # Keyed by the card's identifier within its issuing community.
                identifier=identifier,
                community=None if identifier is None else community_of(role).value,
            )
        )
        assert res.inserted_primary_key is not None
        account_id = int(res.inserted_primary_key[0])
        if service_id is None:
            ensure_boxes(conn, address.lower())
        if role is Role.AVOCAT:  # files saisines (palais.mailbox.saisine_flow)
            ensure_boxes(conn, address.lower(), saisines=True)
        if fingerprint:
            conn.execute(
                insert(CE).values(
                    fingerprint=fingerprint, account_id=account_id, subject=subject, first_seen=now
                )
            )
        return account_id

    @staticmethod
    def open_dossier(conn: Connection, opening: DossierOpening) -> int:
        """Carry out a dossier's opening: the dossier, its participants, their boxes."""
        res = conn.execute(
            insert(DO).values(
                number=opening.number,
                address=opening.address,
                juridiction=opening.juridiction,
                service_id=opening.service_id,
            )
        )
        assert res.inserted_primary_key is not None
        dossier_id = int(res.inserted_primary_key[0])
        if opening.participants:
            conn.execute(
                insert(PA),
                [
                    {"dossier_id": dossier_id, "account_id": p.account_id, "capacity": p.capacity}
                    for p in opening.participants
                ],
            )
        for owner in opening.box_owners:
            ensure_boxes(conn, owner, opening.number)
        return dossier_id

    @staticmethod
    def add_dossier(
        conn: Connection, *, number: str, address: str, juridiction: str, service_id: int
    ) -> int:
        service = conn.execute(select(SV.c.address).where(SV.c.id == service_id)).scalar_one()
        opening = plan_dossier_opening(
            number=number,
            address=address,
            juridiction=juridiction,
            service_id=service_id,
            service_address=service,
        )
        return Directory.open_dossier(conn, opening)

    @staticmethod
    def participation(conn: Connection, account_id: int, capacity: str) -> Participation:
        """The facts of an account about to take part: whose mailbox shows it."""
        owner = conn.execute(
            select(func.coalesce(SV.c.address, AC.c.address))
            .select_from(AC)
            .outerjoin(SV, SV.c.id == AC.c.service_id)
            .where(AC.c.id == account_id)
        ).scalar_one()
        return Participation(account_id, str(owner), capacity)

    @staticmethod
    def add_participant(
        conn: Connection, *, dossier_id: int, account_id: int, capacity: str
    ) -> None:
        joining = Directory.participation(conn, account_id, capacity)
        number = conn.execute(select(DO.c.number).where(DO.c.id == dossier_id)).scalar_one()
        already = conn.execute(select(PA.c.account_id).where(PA.c.dossier_id == dossier_id))
        owners = plan_participation(joining, [int(a) for a in already.scalars()])
        conn.execute(
            insert(PA).values(dossier_id=dossier_id, account_id=account_id, capacity=capacity)
        )
        for owner in owners:
            ensure_boxes(conn, owner, number)

    @staticmethod
    def deactivate(conn: Connection, address: str) -> None:
        conn.execute(update(AC).where(AC.c.address == address.lower()).values(active=False))


def _facts_query() -> Any:
    return select(
        AC.c.id,
        AC.c.address,
        AC.c.role,
        AC.c.display_name,
        AC.c.active,
        AC.c.identifier,
        SV.c.address.label("service"),
    ).outerjoin(SV, SV.c.id == AC.c.service_id)


def _account_facts(row: Any) -> AccountFacts:
    return AccountFacts(
        account_id=int(row.id),
        address=row.address,
        role=Role(row.role),
        display_name=row.display_name,
        active=bool(row.active),
        service=row.service,
        identifier=row.identifier,
    )


def _placement(
    pid: int, message_id: int, kind: BoxKind, dossier: str | None, origin: str | None
) -> Placement:
    return Placement(pid, message_id, kind, dossier, BoxKind(origin) if origin else None)
