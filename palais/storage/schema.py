"""Tables. Kept portable: the same DDL runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Service(Base):
    """A greffe service whose mailbox several clerks share."""

    __tablename__ = "service"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    juridiction: Mapped[str] = mapped_column(String(200))


class Account(Base):
    __tablename__ = "account"
    # The holder's stable identifier (bar number, agent number: the card's
    # subject serialNumber) is unique within the community that issues it;
    # NULLs are distinct, so accounts without one do not collide (migration 0006).
    __table_args__ = (
        Index("ux_account_community_identifier", "community", "identifier", unique=True),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(200))
    service_id: Mapped[int | None] = mapped_column(ForeignKey("service.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    identifier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    community: Mapped[str | None] = mapped_column(String(32), nullable=True)  # TrustCommunity


class Certificate(Base):
    """A card certificate linked to an account (several over renewals)."""

    __tablename__ = "certificate"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    subject: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Dossier(Base):
    __tablename__ = "dossier"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    juridiction: Mapped[str] = mapped_column(String(200))
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"))
    # DossierStatus; NULL for dossiers opened before migration 0011.
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)


class DossierParty(Base):
    """A party of a dossier, and the lawyer constituted for it (migration 0011);
    ``folded``: the name as a search by party name compares it."""

    __tablename__ = "dossier_party"
    __table_args__ = (
        Index("ix_dossier_party_dossier", "dossier_id"),
        Index("ix_dossier_party_folded", "folded"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossier.id"))
    quality: Mapped[str] = mapped_column(String(32))  # Quality
    person_type: Mapped[str] = mapped_column(String(32))  # PersonType
    name: Mapped[str] = mapped_column(String(200))
    folded: Mapped[str] = mapped_column(String(200))
    lawyer: Mapped[str | None] = mapped_column(String(320), nullable=True)


class Participation(Base):
    """Who takes part in a dossier besides its service (lawyers, magistrates...)."""

    __tablename__ = "participation"
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossier.id"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), primary_key=True)
    capacity: Mapped[str] = mapped_column(String(32))


class Delegation(Base):
    """A lawyer's delegation in force: a delegate acts on one dossier of the
    lawyer's (or on all, ``dossier_id`` NULL), to read or to read and write
    (migration 0007). A revocation deletes the row; the audit log keeps both."""

    __tablename__ = "delegation"
    __table_args__ = (
        UniqueConstraint("lawyer_id", "delegate_id", "dossier_id"),
        Index("ix_delegation_delegate", "delegate_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lawyer_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    delegate_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossier.id"), nullable=True)
    rights: Mapped[str] = mapped_column(String(8))  # palais.mailbox.delegation.Right
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    granted_by: Mapped[str] = mapped_column(String(320))  # the lawyer, or "operator:<login>"


class Mailbox(Base):
    __tablename__ = "mailbox"
    __table_args__ = (UniqueConstraint("owner", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(400))
    special_use: Mapped[str | None] = mapped_column(String(16), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # BoxKind
    dossier: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: global view
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)


class Blob(Base):
    """Where the bytes of a message live in the pack store, by SHA-256."""

    __tablename__ = "blob"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)
    refcount: Mapped[int] = mapped_column(Integer, default=0)


class Message(Base):
    """A message stored once, whatever the number of boxes showing it."""

    __tablename__ = "message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob: Mapped[str] = mapped_column(ForeignKey("blob.sha256"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    header_size: Mapped[int] = mapped_column(Integer)
    internaldate: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The Date header's own day, in its own zone: what SENT* keys compare
    # (RFC 3501 6.4.4); sent_date is the instant, kept in UTC.
    sent_day: Mapped[date | None] = mapped_column(Date, nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(998), nullable=True, index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_addr: Mapped[str] = mapped_column(Text, default="")
    to_addr: Mapped[str] = mapped_column(Text, default="")
    cc_addr: Mapped[str] = mapped_column(Text, default="")
    bcc_addr: Mapped[str] = mapped_column(Text, default="")
    sender: Mapped[str] = mapped_column(String(320))
    sender_fingerprint: Mapped[str] = mapped_column(String(64))
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossier.id"), nullable=True)
    # SHA-256 of the sender's address and the bytes as submitted, before the
    # gateway completed them: how any node knows a resend (migration 0016).
    arrival: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MessageText(Base):
    """A message's search documents, for the substring index (migration 0009).

    PostgreSQL only, with a pg_trgm GIN index per column; SQLite keeps them
    in FTS5 virtual tables the migration creates (message_head_text,
    message_body_text), which cannot be declared here.
    """

    __tablename__ = "message_text"
    __table_args__ = (
        Index(
            "ix_message_text_head",
            "head",
            postgresql_using="gin",
            postgresql_ops={"head": "gin_trgm_ops"},
        ),
        Index(
            "ix_message_text_body",
            "body",
            postgresql_using="gin",
            postgresql_ops={"body": "gin_trgm_ops"},
        ),
    )
    message_id: Mapped[int] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), primary_key=True
    )
    head: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)


class TextPending(Base):
    """A message stored before the substring index, not indexed yet."""

    __tablename__ = "text_pending"
    message_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class Placement(Base):
    """Where one owner holds one message: a box kind, a dossier, where it came from.

    A placement shows as two entries: in the dossier's box and in the global view.
    """

    __tablename__ = "placement"
    __table_args__ = (Index("ix_placement_owner_message", "owner", "message_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id"))
    kind: Mapped[str] = mapped_column(String(16))
    dossier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    origin: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Entry(Base):
    """A message shown in a box, with its UID, flags and modification sequence."""

    __tablename__ = "entry"
    __table_args__ = (
        Index("ix_entry_modseq", "mailbox_id", "modseq"),
        Index("ix_entry_message", "message_id"),
    )
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id"))
    placement_id: Mapped[int] = mapped_column(ForeignKey("placement.id"), index=True)
    flags: Mapped[str] = mapped_column(Text, default="")
    modseq: Mapped[int] = mapped_column(BigInteger)


class Vanished(Base):
    """An entry that left a box: its UID and the box's MODSEQ then (IMAP
    QRESYNC's VANISHED, RFC 7162 3.2; migration 0010)."""

    __tablename__ = "vanished"
    __table_args__ = (Index("ix_vanished_modseq", "mailbox_id", "modseq"),)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)


class ImapRecent(Base):
    """Per box, the highest UID an IMAP session was told of first: above it,
    messages are \\Recent for the next session selecting the box (migration 0010)."""

    __tablename__ = "imap_recent"
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailbox.id"), primary_key=True, autoincrement=False
    )
    uid: Mapped[int] = mapped_column(BigInteger)


class EvidenceLog(Base):
    """One receipt's evidence: a leaf of the append-only evidence log.

    ``about`` and ``receipt_message`` name message rows without a foreign
    key: receipts are never purged with the messages they prove, nor with
    the holder's copy of the receipt mail; the evidence itself is here.
    """

    __tablename__ = "evidence_log"
    __table_args__ = (Index("ix_evidence_log_about", "about"),)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    evidence_id: Mapped[str] = mapped_column(String(64), unique=True)
    events: Mapped[str] = mapped_column(String(100))  # event codes, comma-joined
    about: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    holder: Mapped[str] = mapped_column(String(320))
    dossier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    evidence: Mapped[str] = mapped_column(Text)  # the canonical JSON, as signed
    leaf_hash: Mapped[str] = mapped_column(String(64))
    receipt_message: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The receipt mail as sealed: its message row's blob points here
    # (segment EVIDENCE_SEGMENT, offset = position), so that it commits with
    # its rows and needs no second sync of the pack.
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EvidenceHead(Base):
    """The log's size and the compact range of its tree (one row, id 1): what
    the next leaf links to and the tree head is computed from."""

    __tablename__ = "evidence_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[str] = mapped_column(Text)


class TreeHead(Base):
    """A signed tree head of the evidence log."""

    __tablename__ = "tree_head"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    document: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)  # base64


class FirstRead(Base):
    """That a received message was read in a mailbox: one read receipt, ever."""

    __tablename__ = "first_read"
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(320), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)


class TrustAnchor(Base):
    """A CA certificate trusted for one community's clients: an anchor, or an
    intermediate that chains to one. Removed ones are kept, dated."""

    __tablename__ = "trust_anchor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community: Mapped[str] = mapped_column(String(32))  # TrustCommunity
    kind: Mapped[str] = mapped_column(String(16))  # "anchor" or "intermediate"
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the DER
    subject: Mapped[str] = mapped_column(Text)
    pem: Mapped[str] = mapped_column(Text)
    added: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    removed: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TrustCrl(Base):
    """The newest CRL in force for one CA (by the CA certificate's fingerprint)."""

    __tablename__ = "trust_crl"
    issuer: Mapped[str] = mapped_column(String(64), primary_key=True)
    pem: Mapped[str] = mapped_column(Text)
    number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # cRLNumber
    this_update: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_update: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    fetched: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(Text)  # "import:<file name>" or the URL fetched


class TrustState(Base):
    """One row (id 1): bumped by every change to anchors or CRLs, so that every
    node (and every listener of a node) rebuilds what it trusts."""

    __tablename__ = "trust_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)


class AuditEvent(Base):
    """The append-only audit log: what operators changed, and what was refused."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_at", "at"),
        Index("ix_audit_event_subject", "subject"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(320))  # an address, or "operator:<login>"
    action: Mapped[str] = mapped_column(String(64))  # e.g. trust-added, connection-refused
    subject: Mapped[str | None] = mapped_column(String(320), nullable=True)  # account, CA...
    listener: Mapped[str | None] = mapped_column(String(32), nullable=True)
    peer: Mapped[str | None] = mapped_column(String(80), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON object


class Departure(Base):
    """A clerk's or a magistrate's departure: declared, cancelled or carried out (once)."""

    __tablename__ = "departure"
    __table_args__ = (Index("ix_departure_due", "state", "effective_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    last_day: Mapped[date] = mapped_column(Date)
    # 00:00 the day after last_day in the instance's time zone, as UTC.
    effective_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    successor_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # DepartureState
    set_by: Mapped[str] = mapped_column(String(320))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: what moved


class RelayQueue(Base):
    """A filed message for a court system's SMTP endpoint (migration 0012):
    written with the filing, sent until a 250 or given up (then a non-remise).

    The row holds a reference to the blob (counted in ``blob.refcount``) so
    that the sender deleting their copy meanwhile does not take the bytes
    away; ``message_id`` is the message row (no foreign key, for the same
    reason). ``lease_until``: a node is sending it, others skip it until then.
    """

    __tablename__ = "relay_queue"
    __table_args__ = (
        UniqueConstraint("message_id", "recipient"),
        Index("ix_relay_queue_due", "state", "next_attempt"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer)
    blob: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    sender: Mapped[str] = mapped_column(String(320))
    message_ident: Mapped[str | None] = mapped_column(String(998), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # pending, sent, failed
    failures: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AlertSetting(Base):
    """Where and how a person is told of arrivals in their dossiers (migration 0014)."""

    __tablename__ = "alert_setting"
    person: Mapped[str] = mapped_column(String(320), primary_key=True)
    owner: Mapped[str] = mapped_column(String(320))  # whose boxes: a clerk's service
    address: Mapped[str] = mapped_column(String(320))
    mode: Mapped[str] = mapped_column(String(16))  # immediate, digest
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertNotice(Base):
    """The outbox of alerts: one event to tell one person, until sent.

    ``message_id`` is the message row that caused it (no foreign key: the
    message may be purged first); with ``person`` and ``kind`` it is unique,
    so that deriving notices twice from the same arrivals adds nothing.
    ``lease_until``: a node is sending it, the others leave it alone.
    """

    __tablename__ = "alert_notice"
    __table_args__ = (
        UniqueConstraint("person", "message_id", "kind", name="uq_alert_notice_event"),
        Index("ix_alert_notice_pending", "state", "person"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(16))
    dossier: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AlertCursor(Base):
    """How far the message rows have been read for alerts (one row, "messages")."""

    __tablename__ = "alert_cursor"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)


class DossierLife(Base):
    """A dossier's life as its court system told it (migration 0013): the
    domain's ``DossierLife`` as JSON, its version (events applied), and what
    the purge looks for (terminated when, purged when)."""

    __tablename__ = "dossier_life"
    __table_args__ = (Index("ix_dossier_life_terminated", "purged_at", "terminated_at"),)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossier.id"), primary_key=True)
    state: Mapped[str] = mapped_column(Text)  # JSON
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # DossierStatus
    terminated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DossierEventApplied(Base):
    """Each dossier event applied, by the digest of its bytes: the same event
    sent again is filed without being applied twice (migration 0013)."""

    __tablename__ = "dossier_event"
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossier.id"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DossierFiche(Base):
    """The Fiche dossier message each mailbox holds (migration 0013);
    ``message_id`` without a foreign key: the message goes with its last
    placement, and this row is replaced in that transaction."""

    __tablename__ = "dossier_fiche"
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossier.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(320), primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer)


class OpenedHearingSlots(Base):
    """A juridiction's opened hearing slots, its last published list as JSON
    (migration 0013), kept with the message that published it."""

    __tablename__ = "hearing_slots"
    juridiction_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    document: Mapped[str] = mapped_column(Text)


class HearingBooking(Base):
    """A place of a hearing slot taken by a saisine's date booking (migration
    0017), written with the saisine, removed when the registry rejects it.
    ``message_id`` names the saisine's row without a foreign key: the
    booking stands until the registry decides, whoever deletes their copy."""

    __tablename__ = "hearing_booking"
    message_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    juridiction_code: Mapped[str] = mapped_column(String(100))
    slot_id: Mapped[str] = mapped_column(String(200))
    booked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_hearing_booking_slot", "juridiction_code", "slot_id"),)


class BlobOrphan(Base):
    """A large object no ``blob`` row named when a sweep saw it (migration
    0015; PostgreSQL only, ``palais.storage.blob_sweep``): unlinked by a later
    sweep, a grace period on, if still unnamed. ``lo_xmin`` is the creating
    transaction of its metadata row: an OID given to a new object is not the
    one seen."""

    __tablename__ = "blob_orphan"
    lo_oid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    lo_xmin: Mapped[str] = mapped_column(String(20))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def table(model: type[Base]) -> Table:
    """The Core table of a model, typed for insert/update/delete."""
    t = model.__table__
    assert isinstance(t, Table)
    return t
